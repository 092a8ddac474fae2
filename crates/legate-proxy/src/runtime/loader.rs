//! The runtime's layers, kept on the main thread (Envoy's `LoaderImpl`): each change (a disk
//! layer's root swapped, `/runtime_modify`, an RTDS update) builds a new snapshot from every
//! layer and publishes it to the workers.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use legate_config::bootstrap::{LayeredRuntime, RuntimeLayer, RuntimeLayerKind};
use legate_stats::Scope;
use serde_json::Value;

use super::{publish, Entry, Layer, Snapshot};

legate_stats::stats! {
    /// `runtime.*`, Envoy's ALL_RUNTIME_STATS.
    pub struct RuntimeStats {
        counter deprecated_feature_use,
        counter load_error,
        counter load_success,
        counter override_dir_exists,
        counter override_dir_not_exists,
        gauge admin_overrides_active,
        gauge deprecated_feature_seen_since_process_start,
        gauge num_keys,
        gauge num_layers,
    }
}

/// Envoy walks a disk layer at most this deep (`MaxWalkDepth`).
const MAX_WALK_DEPTH: usize = 16;

/// How often a disk layer's `symlink_root` is looked at for a swap. Envoy watches it with
/// inotify; a look is one `lstat`, and polling needs no new dependency (as the SDS files).
const DISK_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Where one layer's values come from.
enum Source {
    Static(BTreeMap<String, Entry>),
    Disk {
        symlink_root: PathBuf,
        /// `symlink_root/subdirectory[/service_cluster]`.
        path: PathBuf,
        /// The root's identity when last read: a swap (`mv -T new current`) changes it.
        seen: Cell<Option<RootIdentity>>,
    },
    Admin,
    Rtds {
        values: RefCell<BTreeMap<String, Entry>>,
    },
}

/// What a swap of the root changes: the entry the name points at is a new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RootIdentity {
    dev: u64,
    ino: u64,
}

struct LayerSource {
    name: String,
    source: Source,
}

pub struct Loader {
    layers: Vec<LayerSource>,
    admin: RefCell<BTreeMap<String, Entry>>,
    /// The snapshot last published.
    current: RefCell<Arc<Snapshot>>,
    stats: RuntimeStats,
}

impl Loader {
    /// Loads every layer but the RTDS ones (empty until their first update) and publishes the
    /// snapshot. Without `layered_runtime` there are no layers (current Envoy); with an empty
    /// one, Envoy's single admin layer with an empty name. `config` was validated with the
    /// bootstrap ([`LayeredRuntime::validate`]).
    pub fn new(config: Option<&LayeredRuntime>, service_cluster: &str, scope: &Scope) -> Result<Rc<Loader>, String> {
        let default;
        let config = match config {
            Some(config) if config.layers.is_empty() => {
                default = LayeredRuntime {
                    layers: vec![RuntimeLayer { admin_layer: Some(Value::Null), ..Default::default() }],
                };
                &default
            }
            Some(config) => config,
            None => &LayeredRuntime::default(),
        };
        let mut layers = Vec::with_capacity(config.layers.len());
        for (index, layer) in config.layers.iter().enumerate() {
            let source = match layer.kind().map_err(|e| format!("layered_runtime.layers[{index}]: {e}"))? {
                RuntimeLayerKind::Static => {
                    let values = layer.static_layer.clone().unwrap_or_default();
                    Source::Static(entries(&values).map_err(|e| format!("layered_runtime.layers[{index}].{e}"))?)
                }
                RuntimeLayerKind::Disk => {
                    let disk = layer.disk_layer.clone().unwrap_or_default();
                    let mut path = Path::new(&disk.symlink_root).join(&disk.subdirectory);
                    if disk.append_service_cluster {
                        path.push(service_cluster);
                    }
                    let symlink_root = PathBuf::from(disk.symlink_root);
                    // Envoy watches the root's directory, and cannot start without it.
                    let parent = symlink_root.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
                    if !parent.is_dir() {
                        return Err(format!(
                            "layered_runtime.layers[{index}].disk_layer.symlink_root: unable to add filesystem watch \
                             for file {}: No such file or directory",
                            symlink_root.display()
                        ));
                    }
                    Source::Disk { seen: Cell::new(root_identity(&symlink_root)), symlink_root, path }
                }
                RuntimeLayerKind::Admin => Source::Admin,
                RuntimeLayerKind::Rtds => Source::Rtds { values: RefCell::default() },
            };
            layers.push(LayerSource { name: layer.name.clone(), source });
        }
        let loader = Rc::new(Loader {
            layers,
            admin: RefCell::default(),
            current: RefCell::default(),
            stats: RuntimeStats::new(scope),
        });
        loader.load();
        Ok(loader)
    }

    /// Builds the snapshot from every layer, the disk layers read again, and publishes it.
    /// A disk layer whose directory is missing is left out; one that cannot be read is left
    /// out and counts a load error.
    fn load(&self) {
        let mut layers = Vec::with_capacity(self.layers.len());
        let (mut disk_layers, mut failed) = (0, false);
        for layer in &self.layers {
            let values = match &layer.source {
                Source::Static(values) => values.clone(),
                Source::Rtds { values } => values.borrow().clone(),
                Source::Admin => self.admin.borrow().clone(),
                Source::Disk { path, .. } => {
                    if !path.is_dir() {
                        continue;
                    }
                    match read_disk_layer(path) {
                        Ok(values) => {
                            disk_layers += 1;
                            values
                        }
                        Err(e) => {
                            tracing::warn!(layer = %layer.name, "runtime: cannot load disk layer: {e}");
                            failed = true;
                            continue;
                        }
                    }
                }
            };
            layers.push(Layer { name: layer.name.clone(), values });
        }
        // Envoy's counters from when the second disk layer was "the override directory".
        if disk_layers > 1 {
            self.stats.override_dir_exists.inc();
        } else {
            self.stats.override_dir_not_exists.inc();
        }
        if failed {
            self.stats.load_error.inc();
        } else {
            self.stats.load_success.inc();
        }
        let snapshot = Snapshot::new(layers);
        self.stats.num_keys.set(snapshot.num_keys() as u64);
        self.stats.num_layers.set(snapshot.layers.len() as u64);
        let snapshot = Arc::new(snapshot);
        *self.current.borrow_mut() = snapshot.clone();
        publish(snapshot);
    }

    /// The snapshot this loader published last (what `/runtime` shows).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.borrow().clone()
    }

    /// Looks at each disk layer's root for a swap, reloading those swapped; runs until the
    /// loader is dropped. Returns at once where there are no disk layers.
    pub async fn watch_disk_layers(self: Rc<Self>) {
        if !self.layers.iter().any(|l| matches!(l.source, Source::Disk { .. })) {
            return;
        }
        let weak = Rc::downgrade(&self);
        drop(self);
        loop {
            tokio::time::sleep(DISK_POLL_INTERVAL).await;
            let Some(loader) = weak.upgrade() else { return };
            let mut swapped = false;
            for layer in &loader.layers {
                if let Source::Disk { symlink_root, seen, .. } = &layer.source {
                    let now = root_identity(symlink_root);
                    swapped |= now.is_some() && now != seen.get();
                    seen.set(now);
                }
            }
            // Envoy reloads when something is moved onto the root's name, not when files
            // inside change.
            if swapped {
                loader.load();
            }
        }
    }

    /// `/runtime_modify`: each key set to its value in the admin layer, or removed where the
    /// value is empty. Nothing changes where a value is not valid YAML.
    pub fn merge_admin(&self, changes: &[(String, String)]) -> Result<(), String> {
        if !self.layers.iter().any(|l| matches!(l.source, Source::Admin)) {
            return Err("No admin layer specified".into());
        }
        let parsed: Vec<(&String, Option<Entry>)> = changes
            .iter()
            .map(|(key, value)| Ok((key, if value.is_empty() { None } else { Some(Entry::from_text(value)?) })))
            .collect::<Result<_, String>>()?;
        {
            let mut admin = self.admin.borrow_mut();
            for (key, entry) in parsed {
                match entry {
                    None => admin.remove(key),
                    Some(entry) => admin.insert(key.clone(), entry),
                };
            }
            self.stats.admin_overrides_active.set(u64::from(!admin.is_empty()));
        }
        self.load();
        Ok(())
    }

    /// An RTDS update for the layer `name` (`None`: the resource was removed). Refused with
    /// the reason where a value is not one the runtime takes.
    pub fn update_rtds(&self, name: &str, layer: Option<&Value>) -> Result<(), String> {
        let values = match layer {
            Some(Value::Object(map)) => {
                let mut flat = serde_json::Map::new();
                flatten("", map, &mut flat);
                entries(&flat)?
            }
            Some(Value::Null) | None => BTreeMap::new(),
            Some(_) => return Err("layer: must be a Struct".into()),
        };
        for layer in &self.layers {
            if let (true, Source::Rtds { values: current }) = (layer.name == name, &layer.source) {
                *current.borrow_mut() = values.clone();
            }
        }
        self.load();
        Ok(())
    }
}

fn root_identity(root: &Path) -> Option<RootIdentity> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(root).ok()?;
    Some(RootIdentity { dev: meta.dev(), ino: meta.ino() })
}

/// A static or RTDS layer's values; nested objects were joined with dots already.
fn entries(values: &serde_json::Map<String, Value>) -> Result<BTreeMap<String, Entry>, String> {
    values
        .iter()
        .map(|(key, value)| Entry::from_json(value).map(|e| (key.clone(), e)).map_err(|e| format!("{key}: {e}")))
        .collect()
}

/// Joins nested objects' keys with dots, as Envoy reads a Struct layer; an empty object, or
/// one with `numerator` or `denominator` (a fractional percent), stays one value.
fn flatten(prefix: &str, map: &serde_json::Map<String, Value>, out: &mut serde_json::Map<String, Value>) {
    for (key, value) in map {
        let key = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match value {
            Value::Object(inner)
                if !inner.is_empty() && !inner.contains_key("numerator") && !inner.contains_key("denominator") =>
            {
                flatten(&key, inner, out)
            }
            other => {
                out.insert(key, other.clone());
            }
        }
    }
}

/// A disk layer's tree, refused under `/dev`, `/sys` and `/proc` as Envoy refuses it.
fn read_disk_layer(path: &Path) -> Result<BTreeMap<String, Entry>, String> {
    let canonical = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if ["/dev", "/sys", "/proc"].iter().any(|p| canonical.starts_with(p)) {
        return Err(format!("Invalid path: {}", path.display()));
    }
    let mut values = BTreeMap::new();
    walk(path, "", 1, &mut values)?;
    Ok(values)
}

/// One directory of a disk layer: a file is a key (its path below the layer's directory, `/`
/// becoming `.`), its value the file's text without empty lines and `#` comment lines, the
/// last line right-trimmed, read as YAML.
fn walk(dir: &Path, prefix: &str, depth: usize, out: &mut BTreeMap<String, Entry>) -> Result<(), String> {
    if depth > MAX_WALK_DEPTH {
        return Err(format!("Walk recursion depth exceeded {MAX_WALK_DEPTH}"));
    }
    let read = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for item in read {
        let item = item.map_err(|e| format!("{}: {e}", dir.display()))?;
        let name = item.file_name();
        let name = name.to_string_lossy();
        let key = if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") };
        let path = item.path();
        // Symlinks are followed, as Envoy's `stat`; a broken one fails as a file that cannot
        // be read, other entries that cannot be looked at are skipped.
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            Err(_) if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) => {
                return Err(format!("unable to read file: {}", path.display()));
            }
            Err(_) => continue,
        };
        if meta.is_dir() {
            walk(&path, &key, depth + 1, out)?;
        } else if meta.is_file() {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let lines: Vec<&str> = text.split('\n').filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
            let value = lines.join("\n");
            let entry = Entry::from_text(value.trim_end()).map_err(|e| format!("{}: {e}", path.display()))?;
            out.insert(key, entry);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! These publish to the process's runtime, which other unit tests read: their keys are
    //! ones nothing else looks up.
    use super::*;
    use legate_stats::Store;

    fn loader(yaml: &str, cluster: &str) -> Rc<Loader> {
        let config: LayeredRuntime = serde_yaml_ng::from_str(yaml).unwrap();
        let store = Store::new(1);
        Loader::new(Some(&config), cluster, &store.scope("runtime")).unwrap()
    }

    #[test]
    fn disk_layers_read_a_tree_of_files() {
        let dir = tempdir();
        let root = dir.join("current");
        std::fs::create_dir_all(root.join("envoy/test_only/disk/layer")).unwrap();
        std::fs::write(root.join("envoy/test_only/disk/layer/abort_percent"), "# comment\n50\n").unwrap();
        std::fs::write(root.join("envoy/plain"), "text  \n").unwrap();
        std::fs::write(root.join("envoy/.hidden"), "1").unwrap();
        std::fs::create_dir_all(root.join("envoy/svc")).unwrap();
        let yaml =
            format!("layers:\n- name: disk\n  disk_layer: {{symlink_root: {}, subdirectory: envoy}}\n", root.display());
        let loader = loader(&yaml, "svc");
        let snapshot = loader.snapshot();
        let layer = &snapshot.layers[0];
        assert_eq!(layer.values["test_only.disk.layer.abort_percent"].raw, "50");
        assert_eq!(layer.values["plain"].raw, "text");
        assert_eq!(layer.values[".hidden"].raw, "1");
        assert_eq!(loader.stats.override_dir_not_exists.value(), 1);
        assert_eq!(loader.stats.load_success.value(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn admin_changes_and_removals() {
        let loader = loader("layers:\n- {name: s, static_layer: {a: 1}}\n- {name: admin, admin_layer: {}}\n", "");
        loader.merge_admin(&[("a".into(), "2".into()), ("b".into(), "x".into())]).unwrap();
        assert_eq!(loader.stats.admin_overrides_active.value(), 1);
        loader.merge_admin(&[("a".into(), String::new()), ("b".into(), String::new())]).unwrap();
        assert_eq!(loader.stats.admin_overrides_active.value(), 0);
        let without = loader_without_admin();
        assert_eq!(without.merge_admin(&[("a".into(), "1".into())]), Err("No admin layer specified".into()));
    }

    fn loader_without_admin() -> Rc<Loader> {
        loader("layers:\n- {name: s, static_layer: {}}\n", "")
    }

    #[test]
    fn rtds_layers_flatten_structs() {
        let loader = loader("layers:\n- {name: r, rtds_layer: {name: r, rtds_config: {ads: {}}}}\n", "");
        let layer = serde_json::json!({"a": {"b": 3, "f": {"numerator": 1}}, "c": "x"});
        loader.update_rtds("r", Some(&layer)).unwrap();
        let snapshot = loader.snapshot();
        let keys: Vec<_> = snapshot.layers[0].values.keys().cloned().collect();
        assert_eq!(keys, ["a.b", "a.f", "c"]);
        assert!(loader.update_rtds("r", Some(&serde_json::json!({"l": [1]}))).is_err());
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("legate-runtime-{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
