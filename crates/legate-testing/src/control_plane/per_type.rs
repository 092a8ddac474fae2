//! The per-type discovery services of [`super`] (`api_type: GRPC`/`DELTA_GRPC`): the same
//! streams as ADS, each restricted to its type; their unary `Fetch*` is not served.

use super::{
    type_url, DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, ResponseStream,
    Service,
};

macro_rules! per_type_service {
    ($fn_name:ident, $module:ident, $server_mod:ident, $trait:ident, $server:ident,
     $stream_ty:ident, $delta_ty:ident, $stream:ident, $delta:ident, $fetch:ident, $type_url:expr) => {
        #[tonic::async_trait]
        impl envoy_types::pb::envoy::service::$module::v3::$server_mod::$trait for Service {
            type $stream_ty = ResponseStream<DiscoveryResponse>;
            type $delta_ty = ResponseStream<DeltaDiscoveryResponse>;

            async fn $stream(
                &self,
                request: tonic::Request<tonic::Streaming<DiscoveryRequest>>,
            ) -> Result<tonic::Response<Self::$stream_ty>, tonic::Status> {
                Ok(tonic::Response::new(self.stream_sotw(request, Some($type_url))))
            }

            async fn $delta(
                &self,
                request: tonic::Request<tonic::Streaming<DeltaDiscoveryRequest>>,
            ) -> Result<tonic::Response<Self::$delta_ty>, tonic::Status> {
                Ok(tonic::Response::new(self.stream_delta(request, Some($type_url))))
            }

            async fn $fetch(
                &self,
                _request: tonic::Request<DiscoveryRequest>,
            ) -> Result<tonic::Response<DiscoveryResponse>, tonic::Status> {
                Err(tonic::Status::unimplemented("the test control plane serves streams only"))
            }
        }

        pub(super) fn $fn_name(
            service: Service,
        ) -> envoy_types::pb::envoy::service::$module::v3::$server_mod::$server<Service> {
            envoy_types::pb::envoy::service::$module::v3::$server_mod::$server::new(service)
        }
    };
}

per_type_service!(
    cluster,
    cluster,
    cluster_discovery_service_server,
    ClusterDiscoveryService,
    ClusterDiscoveryServiceServer,
    StreamClustersStream,
    DeltaClustersStream,
    stream_clusters,
    delta_clusters,
    fetch_clusters,
    type_url::CLUSTER
);
per_type_service!(
    listener,
    listener,
    listener_discovery_service_server,
    ListenerDiscoveryService,
    ListenerDiscoveryServiceServer,
    StreamListenersStream,
    DeltaListenersStream,
    stream_listeners,
    delta_listeners,
    fetch_listeners,
    type_url::LISTENER
);
per_type_service!(
    route,
    route,
    route_discovery_service_server,
    RouteDiscoveryService,
    RouteDiscoveryServiceServer,
    StreamRoutesStream,
    DeltaRoutesStream,
    stream_routes,
    delta_routes,
    fetch_routes,
    type_url::ROUTE
);
per_type_service!(
    endpoint,
    endpoint,
    endpoint_discovery_service_server,
    EndpointDiscoveryService,
    EndpointDiscoveryServiceServer,
    StreamEndpointsStream,
    DeltaEndpointsStream,
    stream_endpoints,
    delta_endpoints,
    fetch_endpoints,
    type_url::ENDPOINT
);
per_type_service!(
    secret,
    secret,
    secret_discovery_service_server,
    SecretDiscoveryService,
    SecretDiscoveryServiceServer,
    StreamSecretsStream,
    DeltaSecretsStream,
    stream_secrets,
    delta_secrets,
    fetch_secrets,
    type_url::SECRET
);
