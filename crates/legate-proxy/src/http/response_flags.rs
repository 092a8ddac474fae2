//! Envoy's response flags: why a stream ended the way it did, as `%RESPONSE_FLAGS%` prints it.

/// A set of response flags (a bit per flag, in Envoy's order).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResponseFlags(u32);

/// One response flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ResponseFlag {
    FailedLocalHealthCheck = 0,
    NoHealthyUpstream,
    UpstreamRequestTimeout,
    LocalReset,
    UpstreamRemoteReset,
    UpstreamConnectionFailure,
    UpstreamConnectionTermination,
    UpstreamOverflow,
    NoRouteFound,
    DelayInjected,
    FaultInjected,
    RateLimited,
    UnauthorizedExternalService,
    RateLimitServiceError,
    DownstreamConnectionTermination,
    UpstreamRetryLimitExceeded,
    StreamIdleTimeout,
    InvalidEnvoyRequestHeaders,
    DownstreamProtocolError,
    UpstreamMaxStreamDurationReached,
    ResponseFromCacheFilter,
    NoFilterConfigFound,
    DurationTimeout,
    UpstreamProtocolError,
    NoClusterFound,
    OverloadManager,
    DnsResolutionFailed,
    DropOverLoad,
    DownstreamRemoteReset,
}

impl ResponseFlag {
    /// Every flag, in the order Envoy prints them.
    pub const ALL: [ResponseFlag; 29] = [
        ResponseFlag::FailedLocalHealthCheck,
        ResponseFlag::NoHealthyUpstream,
        ResponseFlag::UpstreamRequestTimeout,
        ResponseFlag::LocalReset,
        ResponseFlag::UpstreamRemoteReset,
        ResponseFlag::UpstreamConnectionFailure,
        ResponseFlag::UpstreamConnectionTermination,
        ResponseFlag::UpstreamOverflow,
        ResponseFlag::NoRouteFound,
        ResponseFlag::DelayInjected,
        ResponseFlag::FaultInjected,
        ResponseFlag::RateLimited,
        ResponseFlag::UnauthorizedExternalService,
        ResponseFlag::RateLimitServiceError,
        ResponseFlag::DownstreamConnectionTermination,
        ResponseFlag::UpstreamRetryLimitExceeded,
        ResponseFlag::StreamIdleTimeout,
        ResponseFlag::InvalidEnvoyRequestHeaders,
        ResponseFlag::DownstreamProtocolError,
        ResponseFlag::UpstreamMaxStreamDurationReached,
        ResponseFlag::ResponseFromCacheFilter,
        ResponseFlag::NoFilterConfigFound,
        ResponseFlag::DurationTimeout,
        ResponseFlag::UpstreamProtocolError,
        ResponseFlag::NoClusterFound,
        ResponseFlag::OverloadManager,
        ResponseFlag::DnsResolutionFailed,
        ResponseFlag::DropOverLoad,
        ResponseFlag::DownstreamRemoteReset,
    ];

    /// The short form (`UH`, `UF`…) used in access logs and `response_flag_filter`.
    pub fn short(self) -> &'static str {
        match self {
            ResponseFlag::FailedLocalHealthCheck => "LH",
            ResponseFlag::NoHealthyUpstream => "UH",
            ResponseFlag::UpstreamRequestTimeout => "UT",
            ResponseFlag::LocalReset => "LR",
            ResponseFlag::UpstreamRemoteReset => "UR",
            ResponseFlag::UpstreamConnectionFailure => "UF",
            ResponseFlag::UpstreamConnectionTermination => "UC",
            ResponseFlag::UpstreamOverflow => "UO",
            ResponseFlag::NoRouteFound => "NR",
            ResponseFlag::DelayInjected => "DI",
            ResponseFlag::FaultInjected => "FI",
            ResponseFlag::RateLimited => "RL",
            ResponseFlag::UnauthorizedExternalService => "UAEX",
            ResponseFlag::RateLimitServiceError => "RLSE",
            ResponseFlag::DownstreamConnectionTermination => "DC",
            ResponseFlag::UpstreamRetryLimitExceeded => "URX",
            ResponseFlag::StreamIdleTimeout => "SI",
            ResponseFlag::InvalidEnvoyRequestHeaders => "IH",
            ResponseFlag::DownstreamProtocolError => "DPE",
            ResponseFlag::UpstreamMaxStreamDurationReached => "UMSDR",
            ResponseFlag::ResponseFromCacheFilter => "RFCF",
            ResponseFlag::NoFilterConfigFound => "NFCF",
            ResponseFlag::DurationTimeout => "DT",
            ResponseFlag::UpstreamProtocolError => "UPE",
            ResponseFlag::NoClusterFound => "NC",
            ResponseFlag::OverloadManager => "OM",
            ResponseFlag::DnsResolutionFailed => "DF",
            ResponseFlag::DropOverLoad => "DO",
            ResponseFlag::DownstreamRemoteReset => "DR",
        }
    }

    pub fn from_short(s: &str) -> Option<ResponseFlag> {
        ResponseFlag::ALL.into_iter().find(|f| f.short() == s)
    }
}

impl ResponseFlags {
    pub fn set(&mut self, flag: ResponseFlag) {
        self.0 |= 1 << flag as u32;
    }

    pub fn has(&self, flag: ResponseFlag) -> bool {
        self.0 & (1 << flag as u32) != 0
    }

    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// Whether any of `other`'s flags is set here.
    pub fn intersects(&self, other: ResponseFlags) -> bool {
        self.0 & other.0 != 0
    }

    pub fn iter(&self) -> impl Iterator<Item = ResponseFlag> + '_ {
        ResponseFlag::ALL.into_iter().filter(|f| self.has(*f))
    }

    /// `%RESPONSE_FLAGS%`: short names joined with `,`, or `-` when none.
    pub fn to_short_string(&self) -> String {
        if self.is_empty() {
            return "-".to_string();
        }
        self.iter().map(ResponseFlag::short).collect::<Vec<_>>().join(",")
    }
}

impl From<ResponseFlag> for ResponseFlags {
    fn from(flag: ResponseFlag) -> Self {
        let mut flags = ResponseFlags::default();
        flags.set(flag);
        flags
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_in_envoy_order() {
        let mut flags = ResponseFlags::default();
        assert_eq!(flags.to_short_string(), "-");
        flags.set(ResponseFlag::UpstreamRetryLimitExceeded);
        flags.set(ResponseFlag::UpstreamConnectionFailure);
        assert_eq!(flags.to_short_string(), "UF,URX");
        assert_eq!(ResponseFlag::from_short("UO"), Some(ResponseFlag::UpstreamOverflow));
    }
}
