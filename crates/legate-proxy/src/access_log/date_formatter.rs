//! The time format of `%START_TIME(...)%` and `%EMIT_TIME(...)%`: Envoy's `DateFormatter`, a
//! strftime-style format (absl `FormatTime` underneath) plus Envoy's own `%s` and `%f`/`%Nf`
//! ("Access logging" → "Command Operators" → `%START_TIME%`). Always UTC.
//!
//! The format is parsed once into segments; formatting converts the timestamp to a civil date by
//! hand (days since 1970-01-01 → year, month, day in the proleptic Gregorian calendar), so no
//! date crate is needed on the logging path.
//!
//! Supported: `%Y %y %C %m %d %e %j %H %I %M %S %p %a %A %b %h %B %u %w %U %W %z %Z %s %t %%`,
//! the composites `%T %D %F %R %r %c %x %X` (C locale), absl's `%E#S` (seconds with # fraction
//! digits), `%E*S`, `%Ez`, `%E*z`, `%E4Y`, and Envoy's `%f` (9 fraction digits) and `%1f`..`%9f`.
//! `O` modifiers are accepted and ignored (C locale). Any other specifier is copied verbatim.
//! As Envoy, a format containing `%n` (a newline) is refused: the result may end up in a header.

use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// Envoy's `AccessLogDateTimeFormatter` default: `2016-04-15T20:17:00.310Z`.
pub const DEFAULT_DATE_FORMAT: &str = "%Y-%m-%dT%H:%M:%E3SZ";

const WEEKDAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// A parsed time format.
#[derive(Clone, Debug)]
pub struct DateFormatter {
    segments: Vec<Segment>,
}

#[derive(Clone, Debug)]
enum Segment {
    Literal(String),
    /// `%Y`: full year.
    Year,
    /// `%E4Y`: year padded to 4 digits.
    Year4,
    /// `%y`: year in the century, 2 digits.
    YearOfCentury,
    /// `%C`: century, 2 digits.
    Century,
    /// `%m`
    Month,
    /// `%d`
    Day,
    /// `%e`: day padded with a space.
    DaySpacePadded,
    /// `%j`: day of the year, 001..366.
    DayOfYear,
    /// `%H`
    Hour,
    /// `%I`: 12-hour clock.
    Hour12,
    /// `%M`
    Minute,
    /// `%S`
    Second,
    /// `%E#S`: seconds with `#` fraction digits (truncated), `%E*S` (`None`): as many as needed.
    SecondWithFraction(Option<u8>),
    /// Envoy's `%f` (9 digits) and `%Nf`: fraction of the second, truncated to N digits.
    Fraction(u8),
    /// `%p`: AM or PM.
    AmPm,
    /// `%a`
    WeekdayShort,
    /// `%A`
    WeekdayLong,
    /// `%b`, `%h`
    MonthShort,
    /// `%B`
    MonthLong,
    /// `%u`: 1 (Monday)..7.
    WeekdayFromMonday,
    /// `%w`: 0 (Sunday)..6.
    WeekdayFromSunday,
    /// `%U`: week of the year, weeks starting on Sunday.
    WeekOfYearSunday,
    /// `%W`: week of the year, weeks starting on Monday.
    WeekOfYearMonday,
    /// `%s`: seconds since the epoch.
    EpochSeconds,
    /// `%z`: `+0000`.
    Offset,
    /// `%Ez`: `+00:00`.
    OffsetColon,
    /// `%E*z`: `+00:00:00`.
    OffsetColonSeconds,
    /// `%Z`: `UTC`.
    ZoneName,
}

impl DateFormatter {
    /// Parses a time format; an empty one means Envoy's default ([`DEFAULT_DATE_FORMAT`]).
    pub fn parse(format: &str) -> Result<DateFormatter, String> {
        let format = if format.is_empty() { DEFAULT_DATE_FORMAT } else { format };
        if contains_newline_specifier(format) {
            return Err("Invalid header configuration. Format string contains newline.".into());
        }
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut chars = format.char_indices().peekable();
        while let Some((start, c)) = chars.next() {
            if c != '%' {
                literal.push(c);
                continue;
            }
            // The longest specifier is `%E*z`/`%E4Y` (3 characters after the `%`).
            let spec: String = format[start + 1..].chars().take(3).collect();
            let (parsed, consumed) = parse_specifier(&spec);
            match parsed {
                Parsed::Literal(text) => literal.push_str(text),
                Parsed::Segments(list) => {
                    if !literal.is_empty() {
                        segments.push(Segment::Literal(std::mem::take(&mut literal)));
                    }
                    segments.extend(list);
                }
                Parsed::Verbatim => {
                    literal.push('%');
                    continue;
                }
            }
            for _ in 0..consumed {
                chars.next();
            }
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Ok(DateFormatter { segments })
    }

    /// Appends `time`, in UTC, to `out`.
    pub fn format_into(&self, time: SystemTime, out: &mut Vec<u8>) {
        let (secs, nanos) = split_epoch(time);
        let days = secs.div_euclid(86_400);
        let second_of_day = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        let hour = second_of_day / 3600;
        let minute = second_of_day / 60 % 60;
        let second = second_of_day % 60;
        // 0 = Sunday; 1970-01-01 was a Thursday.
        let weekday = (days + 4).rem_euclid(7);
        let year_day = days - days_from_civil(year, 1, 1);
        for segment in &self.segments {
            // Writing into a Vec cannot fail.
            let _ = match segment {
                Segment::Literal(text) => out.write_all(text.as_bytes()),
                Segment::Year => write!(out, "{year}"),
                Segment::Year4 => write!(out, "{year:04}"),
                Segment::YearOfCentury => write!(out, "{:02}", year.rem_euclid(100)),
                Segment::Century => write!(out, "{:02}", year.div_euclid(100)),
                Segment::Month => write!(out, "{month:02}"),
                Segment::Day => write!(out, "{day:02}"),
                Segment::DaySpacePadded => write!(out, "{day:2}"),
                Segment::DayOfYear => write!(out, "{:03}", year_day + 1),
                Segment::Hour => write!(out, "{hour:02}"),
                Segment::Hour12 => write!(out, "{:02}", (hour + 11) % 12 + 1),
                Segment::Minute => write!(out, "{minute:02}"),
                Segment::Second => write!(out, "{second:02}"),
                Segment::SecondWithFraction(digits) => {
                    let _ = write!(out, "{second:02}");
                    write_fraction(out, nanos, *digits, true);
                    Ok(())
                }
                Segment::Fraction(digits) => {
                    write_fraction(out, nanos, Some(*digits), false);
                    Ok(())
                }
                Segment::AmPm => out.write_all(if hour < 12 { b"AM" } else { b"PM" }),
                Segment::WeekdayShort => out.write_all(short(weekday_name(weekday))),
                Segment::WeekdayLong => out.write_all(weekday_name(weekday).as_bytes()),
                Segment::MonthShort => out.write_all(short(month_name(month))),
                Segment::MonthLong => out.write_all(month_name(month).as_bytes()),
                Segment::WeekdayFromMonday => write!(out, "{}", (weekday + 6) % 7 + 1),
                Segment::WeekdayFromSunday => write!(out, "{weekday}"),
                Segment::WeekOfYearSunday => write!(out, "{:02}", (year_day + 7 - weekday) / 7),
                Segment::WeekOfYearMonday => {
                    write!(out, "{:02}", (year_day + 7 - (weekday + 6) % 7) / 7)
                }
                Segment::EpochSeconds => write!(out, "{secs}"),
                Segment::Offset => out.write_all(b"+0000"),
                Segment::OffsetColon => out.write_all(b"+00:00"),
                Segment::OffsetColonSeconds => out.write_all(b"+00:00:00"),
                Segment::ZoneName => out.write_all(b"UTC"),
            };
        }
    }
}

enum Parsed {
    Literal(&'static str),
    Segments(Vec<Segment>),
    /// Not a specifier we know: the `%` is copied and the following characters read as text.
    Verbatim,
}

/// Reads the specifier after a `%` (`spec` holds up to 3 characters); returns what it means and
/// how many characters of `spec` it used.
fn parse_specifier(spec: &str) -> (Parsed, usize) {
    use Segment as S;
    let mut chars = spec.chars();
    let Some(first) = chars.next() else {
        return (Parsed::Verbatim, 0);
    };
    let second = chars.next();
    let third = chars.next();
    let one = |segment: Segment| (Parsed::Segments(vec![segment]), 1);
    let many = |list: Vec<Segment>, consumed: usize| (Parsed::Segments(list), consumed);
    match first {
        '%' => (Parsed::Literal("%"), 1),
        't' => (Parsed::Literal("\t"), 1),
        'Y' => one(S::Year),
        'y' => one(S::YearOfCentury),
        'C' => one(S::Century),
        'm' => one(S::Month),
        'd' => one(S::Day),
        'e' => one(S::DaySpacePadded),
        'j' => one(S::DayOfYear),
        'H' => one(S::Hour),
        'I' => one(S::Hour12),
        'M' => one(S::Minute),
        'S' => one(S::Second),
        'p' => one(S::AmPm),
        'a' => one(S::WeekdayShort),
        'A' => one(S::WeekdayLong),
        'b' | 'h' => one(S::MonthShort),
        'B' => one(S::MonthLong),
        'u' => one(S::WeekdayFromMonday),
        'w' => one(S::WeekdayFromSunday),
        'U' => one(S::WeekOfYearSunday),
        'W' => one(S::WeekOfYearMonday),
        's' => one(S::EpochSeconds),
        'z' => one(S::Offset),
        'Z' => one(S::ZoneName),
        'f' => one(S::Fraction(9)),
        'T' => many(hms(), 1),
        'R' => many(vec![S::Hour, lit(":"), S::Minute], 1),
        'D' => many(vec![S::Month, lit("/"), S::Day, lit("/"), S::YearOfCentury], 1),
        'x' => many(vec![S::Month, lit("/"), S::Day, lit("/"), S::YearOfCentury], 1),
        'F' => many(vec![S::Year, lit("-"), S::Month, lit("-"), S::Day], 1),
        'X' => many(hms(), 1),
        'r' => {
            let list = vec![S::Hour12, lit(":"), S::Minute, lit(":"), S::Second, lit(" "), S::AmPm];
            many(list, 1)
        }
        'c' => {
            let mut list = vec![S::WeekdayShort, lit(" "), S::MonthShort, lit(" ")];
            list.extend([S::DaySpacePadded, lit(" ")]);
            list.extend(hms());
            list.extend([lit(" "), S::Year]);
            many(list, 1)
        }
        '1'..='9' if second == Some('f') => {
            let digits = first.to_digit(10).map_or(9, |d| d as u8);
            many(vec![S::Fraction(digits)], 2)
        }
        'E' => match (second, third) {
            (Some('z'), _) => many(vec![S::OffsetColon], 2),
            (Some('*'), Some('z')) => many(vec![S::OffsetColonSeconds], 3),
            (Some('*'), Some('S')) => many(vec![S::SecondWithFraction(None)], 3),
            (Some('4'), Some('Y')) => many(vec![S::Year4], 3),
            (Some(d @ '0'..='9'), Some('S')) => {
                let digits = d.to_digit(10).map_or(0, |d| d as u8);
                many(vec![S::SecondWithFraction(Some(digits))], 3)
            }
            // `%EY`, `%Ec`…: the C locale has no alternative representation.
            (Some(c), _) => match parse_specifier(&c.to_string()) {
                (Parsed::Verbatim, _) => (Parsed::Verbatim, 0),
                (parsed, _) => (parsed, 2),
            },
            (None, _) => (Parsed::Verbatim, 0),
        },
        'O' => match second {
            Some(c) => match parse_specifier(&c.to_string()) {
                (Parsed::Verbatim, _) => (Parsed::Verbatim, 0),
                (parsed, _) => (parsed, 2),
            },
            None => (Parsed::Verbatim, 0),
        },
        _ => (Parsed::Verbatim, 0),
    }
}

fn lit(text: &str) -> Segment {
    Segment::Literal(text.to_string())
}

fn hms() -> Vec<Segment> {
    vec![Segment::Hour, lit(":"), Segment::Minute, lit(":"), Segment::Second]
}

/// Envoy refuses a time format matching `%[-_0^#]*[1-9]*(E|O)?n` anywhere (even after `%%`).
fn contains_newline_specifier(format: &str) -> bool {
    let bytes = format.as_bytes();
    bytes.iter().enumerate().any(|(i, &b)| {
        if b != b'%' {
            return false;
        }
        let mut rest = bytes.get(i + 1..).unwrap_or_default();
        while let [b'-' | b'_' | b'0' | b'^' | b'#', tail @ ..] = rest {
            rest = tail;
        }
        while let [b'1'..=b'9', tail @ ..] = rest {
            rest = tail;
        }
        if let [b'E' | b'O', tail @ ..] = rest {
            rest = tail;
        }
        rest.first() == Some(&b'n')
    })
}

/// Writes the first `digits` digits of the fraction (truncated, as absl and Envoy do);
/// `None` writes as many as needed, none at all for a whole second.
fn write_fraction(out: &mut Vec<u8>, nanos: u32, digits: Option<u8>, with_dot: bool) {
    let mut text = [0u8; 9];
    let mut rest = nanos;
    for slot in text.iter_mut().rev() {
        *slot = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    let len = match digits {
        Some(d) => usize::from(d.min(9)),
        None => text.iter().rposition(|&d| d != b'0').map_or(0, |last| last + 1),
    };
    if len == 0 {
        return;
    }
    if with_dot {
        out.push(b'.');
    }
    out.extend_from_slice(text.get(..len).unwrap_or_default());
}

fn weekday_name(weekday: i64) -> &'static str {
    WEEKDAYS.get(weekday as usize).copied().unwrap_or("?")
}

fn month_name(month: u32) -> &'static str {
    MONTHS.get(month as usize - 1).copied().unwrap_or("?")
}

fn short(name: &str) -> &[u8] {
    name.as_bytes().get(..3).unwrap_or(name.as_bytes())
}

/// Seconds since the epoch (negative before 1970) and the nanoseconds within that second.
fn split_epoch(time: SystemTime) -> (i64, u32) {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(before) => {
            let d = before.duration();
            let secs = -(d.as_secs() as i64);
            match d.subsec_nanos() {
                0 => (secs, 0),
                nanos => (secs - 1, 1_000_000_000 - nanos),
            }
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date. Years are counted in 400-year eras of
/// 146097 days, starting each year on March 1st so that the leap day is the last of the year.
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = (i64::from(month) + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`]: (year, month 1..=12, day 1..=31).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    fn format(spec: &str, time: SystemTime) -> String {
        let mut out = Vec::new();
        DateFormatter::parse(spec).unwrap().format_into(time, &mut out);
        String::from_utf8(out).unwrap()
    }

    /// 2016-04-15T20:17:00.310Z, the example line of Envoy's "Default Format String".
    const ENVOY_EXAMPLE: u64 = 1_460_751_420;

    #[test]
    fn default_format_matches_envoys_example() {
        let time = at(ENVOY_EXAMPLE, 310_123_456);
        assert_eq!(format("", time), "2016-04-15T20:17:00.310Z");
        assert_eq!(format(DEFAULT_DATE_FORMAT, time), "2016-04-15T20:17:00.310Z");
    }

    #[test]
    fn envoy_fraction_and_epoch_specifiers() {
        let time = at(1_527_590_590, 528_123_456);
        assert_eq!(format("%s.%3f", time), "1527590590.528");
        assert_eq!(format("%s.%6f", time), "1527590590.528123");
        assert_eq!(format("%s.%9f", time), "1527590590.528123456");
        assert_eq!(format("%f", time), "528123456");
        assert_eq!(format("%1f|%E6S|%E*S", time), "5|10.528123|10.528123456");
        assert_eq!(format("%E*S", at(1_527_590_590, 500_000_000)), "10.5");
        assert_eq!(format("%E*S", at(1_527_590_590, 0)), "10");
    }

    #[test]
    fn strftime_specifiers() {
        let time = at(ENVOY_EXAMPLE, 0);
        assert_eq!(format("%Y/%m/%dT%H:%M:%S%z %s", time), "2016/04/15T20:17:00+0000 1460751420");
        assert_eq!(format("%a %A %b %h %B", time), "Fri Friday Apr Apr April");
        assert_eq!(format("%j %u %w %U %W", time), "106 5 5 15 15");
        assert_eq!(format("%y %C %e %I %p %Z %Ez %E*z", time), "16 20 15 08 PM UTC +00:00 +00:00:00");
        assert_eq!(format("%T %R %D %F", time), "20:17:00 20:17 04/15/16 2016-04-15");
        assert_eq!(format("%c", time), "Fri Apr 15 20:17:00 2016");
        assert_eq!(format("100%% %t %Q %OH", time), "100% \t %Q 20");
    }

    #[test]
    fn newline_specifier_is_refused_as_envoy_does() {
        for spec in ["%n", "a %-n", "%En", "%%n"] {
            assert_eq!(
                DateFormatter::parse(spec).unwrap_err(),
                "Invalid header configuration. Format string contains newline."
            );
        }
    }

    #[test]
    fn civil_conversion_round_trips() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(days_from_civil(2100, 3, 1)), (2100, 3, 1));
        for days in (-800_000..800_000).step_by(97) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        // 1969-12-31T23:59:59.5Z: a time before the epoch.
        let before = UNIX_EPOCH - Duration::from_millis(500);
        assert_eq!(format("", before), "1969-12-31T23:59:59.500Z");
    }
}
