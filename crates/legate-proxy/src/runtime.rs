//! Envoy's runtime: values that can change while the server runs (feature percentages, fault
//! rates, limits), looked up by key where the config names a `runtime_key`.
//!
//! The main thread's [`Loader`] merges the layers of `layered_runtime` (static, disk, admin,
//! RTDS; a later layer wins) into an immutable [`Snapshot`] and publishes it; a worker reads the
//! published one through its own cache, which costs one atomic load of a pointer that changes
//! only when the runtime does: no lock, no counter written by two threads. A key the snapshot
//! lacks, or a value of the wrong kind, gives the config's default, as in Envoy.

mod loader;

pub use loader::Loader;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};

use arc_swap::{ArcSwap, Cache};
use legate_config::core::{Denominator, FractionalPercent, RuntimeDouble, RuntimeFractionalPercent};
use legate_config::filters::network::connection_limit::RuntimeFeatureFlag;
use rustc_hash::FxHashMap;
use serde_json::Value;

/// One value, read every way Envoy reads it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Entry {
    /// As written (the file's text, the number printed); what `/runtime` shows.
    pub raw: String,
    uint: Option<u64>,
    double: Option<f64>,
    boolean: Option<bool>,
    fractional: Option<FractionalPercent>,
}

impl Entry {
    /// A value written as text (a disk layer's file, `/runtime_modify`): read as YAML, as
    /// Envoy reads it, so `true` is a bool, `{numerator: 5}` a fractional percent, a number a
    /// number; the text stays as written for `/runtime`.
    pub fn from_text(text: &str) -> Result<Entry, String> {
        let value = legate_config::load::parse_yaml(text, "runtime value").map_err(|e| e.to_string())?;
        let value = match value {
            // YAML 1.1's bool words, which Envoy's YAML parser takes for bools.
            Value::String(s) if !text.trim_start().starts_with(['"', '\'']) => match s.as_str() {
                "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Value::Bool(true),
                "no" | "No" | "NO" | "off" | "Off" | "OFF" => Value::Bool(false),
                _ => Value::String(s),
            },
            // An empty document is an empty mapping to the config loader; here it is no value.
            Value::Object(map) if map.is_empty() && text.trim().is_empty() => Value::Null,
            other => other,
        };
        let mut entry = Entry::from_value(&value);
        entry.raw = text.to_string();
        Ok(entry)
    }

    /// A value given as structured data (a static layer, an RTDS resource). A list or a null
    /// is refused there, as Envoy refuses it (`Invalid runtime entry value`).
    pub fn from_json(value: &Value) -> Result<Entry, String> {
        match value {
            Value::Null | Value::Array(_) => Err("Invalid runtime entry value".into()),
            value => Ok(Entry::from_value(value)),
        }
    }

    /// Envoy's `createEntry` from a protobuf `Value`.
    fn from_value(value: &Value) -> Entry {
        match value {
            Value::Bool(b) => Entry { raw: b.to_string(), boolean: Some(*b), ..Default::default() },
            Value::Number(n) => Entry::number(n.as_f64().unwrap_or_default(), None),
            // A string is a number where it reads as one, else only text.
            Value::String(text) => match text.trim().parse::<f64>() {
                Ok(d) if d.is_finite() && !text.trim().starts_with(['i', 'I', 'n', 'N']) => {
                    Entry::number(d, Some(text.clone()))
                }
                _ => Entry { raw: text.clone(), ..Default::default() },
            },
            Value::Object(map) => {
                Entry { raw: value.to_string(), fractional: fractional_percent(map), ..Default::default() }
            }
            Value::Null | Value::Array(_) => Entry { raw: String::new(), ..Default::default() },
        }
    }

    /// A number: a double; an integer where it is not negative (truncated); a bool where it is
    /// integral and within `i32` (non-zero is true).
    fn number(d: f64, raw: Option<String>) -> Entry {
        let uint = (d >= 0.0 && d <= u64::MAX as f64).then_some(d as u64);
        let boolean = (d.fract() == 0.0 && d < f64::from(i32::MAX)).then_some(d != 0.0);
        Entry { raw: raw.unwrap_or_else(|| shortest_g(d)), uint, double: Some(d), boolean, fractional: None }
    }
}

/// A struct whose fields are only `numerator` (a number) and `denominator` (`HUNDRED`,
/// `TEN_THOUSAND`, `MILLION`; HUNDRED when left out) is a fractional percent.
fn fractional_percent(map: &serde_json::Map<String, Value>) -> Option<FractionalPercent> {
    let mut percent = FractionalPercent::default();
    for (field, value) in map {
        match (field.as_str(), value) {
            ("numerator", Value::Number(n)) => percent.numerator = n.as_f64()?.clamp(0.0, f64::from(u32::MAX)) as u32,
            ("numerator", _) => {}
            ("denominator", Value::String(d)) => {
                percent.denominator = serde_json::from_value(Value::String(d.clone())).ok()?;
            }
            _ => return None,
        }
    }
    Some(percent)
}

/// A double as C's `%g` prints it (six significant digits), which is how Envoy shows a
/// number given in a static layer or RTDS.
fn shortest_g(d: f64) -> String {
    if d == 0.0 {
        return "0".into();
    }
    let exponent = d.abs().log10().floor() as i32;
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if (-5..6).contains(&exponent) {
        trim(format!("{:.*}", (5 - exponent).max(0) as usize, d))
    } else {
        let formatted = format!("{d:.5e}");
        let (mantissa, exp) = formatted.split_once('e').unwrap_or((&formatted, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        format!("{}e{}{:02}", trim(mantissa.to_string()), if exp < 0 { '-' } else { '+' }, exp.abs())
    }
}

/// One layer's values, by key (sorted: `/runtime` lists them so).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Layer {
    pub name: String,
    pub values: BTreeMap<String, Entry>,
}

/// The runtime at one moment: each layer as loaded, and what they give together.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub layers: Vec<Layer>,
    merged: FxHashMap<Box<str>, Entry>,
}

impl Snapshot {
    pub fn new(layers: Vec<Layer>) -> Snapshot {
        let mut merged = FxHashMap::default();
        for layer in &layers {
            for (key, entry) in &layer.values {
                merged.insert(key.as_str().into(), entry.clone());
            }
        }
        Snapshot { layers, merged }
    }

    /// The final value of `key`.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        if self.merged.is_empty() || key.is_empty() {
            return None;
        }
        self.merged.get(key)
    }

    pub fn num_keys(&self) -> usize {
        self.merged.len()
    }

    pub fn integer(&self, key: &str, default: u64) -> u64 {
        self.get(key).and_then(|e| e.uint).unwrap_or(default)
    }

    pub fn double(&self, key: &str, default: f64) -> f64 {
        self.get(key).and_then(|e| e.double).unwrap_or(default)
    }

    pub fn boolean(&self, key: &str, default: bool) -> bool {
        self.get(key).and_then(|e| e.boolean).unwrap_or(default)
    }

    /// The percentage in force for `key`: a fractional percent as given, an integer as a
    /// percentage (above 100 is always), else the default: Envoy's `featureEnabled`.
    pub fn fractional(&self, key: &str, default: &FractionalPercent) -> FractionalPercent {
        match self.get(key) {
            Some(Entry { fractional: Some(f), .. }) => *f,
            Some(Entry { uint: Some(n), .. }) => {
                FractionalPercent { numerator: (*n).min(u64::from(u32::MAX)) as u32, denominator: Denominator::Hundred }
            }
            _ => *default,
        }
    }
}

static CURRENT: LazyLock<ArcSwap<Snapshot>> = LazyLock::new(|| ArcSwap::from_pointee(Snapshot::default()));

/// Whether the published snapshot has any value: most servers run without runtime values,
/// and a lookup then costs one load of a line no thread writes while serving.
static HAS_VALUES: AtomicBool = AtomicBool::new(false);

thread_local! {
    static LOCAL: RefCell<Cache<&'static ArcSwap<Snapshot>, Arc<Snapshot>>> = RefCell::new(Cache::new(&*CURRENT));
}

/// Publishes a new snapshot to every thread.
fn publish(snapshot: Arc<Snapshot>) {
    let has_values = snapshot.num_keys() > 0;
    CURRENT.store(snapshot);
    HAS_VALUES.store(has_values, Ordering::Release);
}

/// Runs `f` on this thread's view of the published snapshot.
fn with<R>(f: impl FnOnce(&Snapshot) -> R) -> R {
    LOCAL.with(|local| f(local.borrow_mut().load()))
}

/// Whether the runtime has any value at all (a key built per use can be skipped when not).
#[inline]
pub fn has_values() -> bool {
    HAS_VALUES.load(Ordering::Acquire)
}

/// Whether a draw falls within `percent` (a numerator at or above its denominator always).
pub fn draw(percent: &FractionalPercent) -> bool {
    let denominator = percent.denominator.value();
    percent.numerator >= denominator || fastrand::u32(..denominator) < percent.numerator
}

/// `RuntimeFractionalPercent`: a draw against the runtime's value for its key, else its
/// default.
pub fn fraction_enabled(config: &RuntimeFractionalPercent) -> bool {
    draw(&fraction(&config.runtime_key, &config.default_value))
}

/// Envoy's `featureEnabled(key, default, random_value)`: the caller's own draw (a request's,
/// shared by the decisions it makes) against the percentage in force.
pub fn enabled_for(key: &str, default: &FractionalPercent, value: u64) -> bool {
    let percent = fraction(key, default);
    value % u64::from(percent.denominator.value()) < u64::from(percent.numerator)
}

/// The percentage in force for `key`, `default` where the runtime has none.
#[inline]
pub fn fraction(key: &str, default: &FractionalPercent) -> FractionalPercent {
    if !has_values() || key.is_empty() {
        return *default;
    }
    with(|s| s.fractional(key, default))
}

/// `RuntimeFeatureFlag`: the runtime's bool for its key, else its default.
pub fn flag_enabled(config: &RuntimeFeatureFlag) -> bool {
    boolean(&config.runtime_key, config.default_value)
}

/// An optional `RuntimeFeatureFlag`: `default` where the config has none.
pub fn flag_enabled_or(config: Option<&RuntimeFeatureFlag>, default: bool) -> bool {
    config.map_or(default, flag_enabled)
}

/// `RuntimeDouble`: the runtime's number for its key, else its default.
pub fn double_of(config: &RuntimeDouble) -> f64 {
    double(&config.runtime_key, config.default_value)
}

// The lookups below are inlined down to the flag's load: most servers have no runtime value,
// and the circuit breakers ask on every acquire and release.
#[inline]
pub fn integer(key: &str, default: u64) -> u64 {
    if !has_values() || key.is_empty() {
        return default;
    }
    with(|s| s.integer(key, default))
}

#[inline]
pub fn double(key: &str, default: f64) -> f64 {
    if !has_values() || key.is_empty() {
        return default;
    }
    with(|s| s.double(key, default))
}

#[inline]
pub fn boolean(key: &str, default: bool) -> bool {
    if !has_values() || key.is_empty() {
        return default;
    }
    with(|s| s.boolean(key, default))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn layer(name: &str, values: &[(&str, Entry)]) -> Layer {
        Layer { name: name.into(), values: values.iter().map(|(k, v)| (k.to_string(), v.clone())).collect() }
    }

    fn text(t: &str) -> Entry {
        Entry::from_text(t).unwrap()
    }

    #[test]
    fn text_values_are_read_as_yaml() {
        let e = text("42");
        assert_eq!((e.uint, e.double, e.boolean, e.raw.as_str()), (Some(42), Some(42.0), Some(true), "42"));
        let e = text("0.25");
        assert_eq!((e.uint, e.double, e.boolean), (Some(0), Some(0.25), None));
        let e = text("true");
        assert_eq!((e.uint, e.boolean), (None, Some(true)));
        let e = text("off");
        assert_eq!(e.boolean, Some(false));
        let e = text("\"off\"");
        assert_eq!(e.boolean, None);
        let e = text("-3");
        assert_eq!((e.uint, e.double, e.boolean), (None, Some(-3.0), Some(true)));
        let e = text("abc");
        assert_eq!((e.uint, e.double, e.boolean, e.raw.as_str()), (None, None, None, "abc"));
        let e = text("{numerator: 5, denominator: TEN_THOUSAND}");
        assert_eq!(e.fractional, Some(FractionalPercent { numerator: 5, denominator: Denominator::TenThousand }));
        let e = text("");
        assert_eq!((e.uint, e.boolean, e.raw.as_str()), (None, None, ""));
        assert!(Entry::from_text("{a: [").is_err());
    }

    #[test]
    fn structured_values_and_fractional_percents() {
        let e = Entry::from_json(&json!(7)).unwrap();
        assert_eq!((e.uint, e.raw.as_str()), (Some(7), "7"));
        let e = Entry::from_json(&json!(1000000)).unwrap();
        assert_eq!((e.uint, e.raw.as_str()), (Some(1_000_000), "1e+06"));
        let e = Entry::from_json(&json!(0.125)).unwrap();
        assert_eq!(e.raw, "0.125");
        let e = Entry::from_json(&json!(false)).unwrap();
        assert_eq!((e.boolean, e.raw.as_str()), (Some(false), "false"));
        // A quoted "true" is text, not a bool (Envoy's reject_invalid_yaml default).
        let e = Entry::from_json(&json!("true")).unwrap();
        assert_eq!(e.boolean, None);
        let e = Entry::from_json(&json!({"numerator": 5, "denominator": "TEN_THOUSAND"})).unwrap();
        assert_eq!(e.fractional, Some(FractionalPercent { numerator: 5, denominator: Denominator::TenThousand }));
        let e = Entry::from_json(&json!({"numerator": 5, "other": 1})).unwrap();
        assert_eq!(e.fractional, None);
        assert!(Entry::from_json(&json!([1])).is_err());
        assert!(Entry::from_json(&json!(null)).is_err());
    }

    #[test]
    fn later_layers_win_and_defaults_fill_the_rest() {
        let snapshot = Snapshot::new(vec![
            layer("base", &[("a", text("1")), ("b", text("2"))]),
            layer("admin", &[("b", text("20"))]),
        ]);
        assert_eq!(snapshot.integer("a", 0), 1);
        assert_eq!(snapshot.integer("b", 0), 20);
        assert_eq!(snapshot.integer("c", 9), 9);
        assert_eq!(snapshot.num_keys(), 2);
        // Not a number: the default, as Envoy's getInteger.
        let snapshot = Snapshot::new(vec![layer("l", &[("a", text("x"))])]);
        assert_eq!(snapshot.integer("a", 5), 5);
    }

    #[test]
    fn an_integer_is_a_percentage_and_a_struct_a_fractional_percent() {
        let default = FractionalPercent { numerator: 3, denominator: Denominator::Million };
        let snapshot = Snapshot::new(vec![layer(
            "l",
            &[
                ("int", text("40")),
                ("frac", Entry::from_json(&json!({"numerator": 1, "denominator": "TEN_THOUSAND"})).unwrap()),
                ("text", text("x")),
            ],
        )]);
        assert_eq!(
            snapshot.fractional("int", &default),
            FractionalPercent { numerator: 40, denominator: Denominator::Hundred }
        );
        assert_eq!(snapshot.fractional("frac", &default).denominator, Denominator::TenThousand);
        assert_eq!(snapshot.fractional("text", &default), default);
        assert_eq!(snapshot.fractional("none", &default), default);
    }

    #[test]
    fn fractions_follow_numerator_and_denominator() {
        let never = FractionalPercent { numerator: 0, denominator: Denominator::Hundred };
        let always = FractionalPercent { numerator: 100, denominator: Denominator::Hundred };
        let above = FractionalPercent { numerator: 5_000_000, denominator: Denominator::Million };
        for _ in 0..1000 {
            assert!(!draw(&never));
            assert!(draw(&always));
            assert!(draw(&above));
        }
        let half = FractionalPercent { numerator: 5_000, denominator: Denominator::TenThousand };
        let hits = (0..10_000).filter(|_| draw(&half)).count();
        assert!((4_000..6_000).contains(&hits), "{hits}");
    }
}
