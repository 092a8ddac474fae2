//! Filesystem subscriptions (`path_config_source`): a file holding a `DiscoveryResponse` in
//! YAML or JSON, read again whenever it changes — including when it is replaced atomically by
//! a rename, or when its `watched_directory` changes (Kubernetes ConfigMaps swap a symlink).
//! legate polls the metadata twice a second instead of using inotify: no new dependency, and
//! a change is seen within half a second.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::value::RawValue;
use serde_json::Value;

use crate::resource::{unwrap_item, DecodedResource};
use crate::subscription::WatchMap;

/// How often the file's metadata is checked.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// What tells one version of a file from the next.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
    directory: Option<SystemTime>,
}

fn stamp(path: &Path, watched_directory: Option<&Path>) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
        directory: watched_directory.and_then(|d| std::fs::metadata(d).ok()).and_then(|m| m.modified().ok()),
    })
}

/// Starts watching `path` for `map`'s watches, on the calling (main) thread's `LocalSet`.
pub(crate) fn start(path: String, watched_directory: Option<String>, map: Rc<WatchMap>) {
    tokio::task::spawn_local(async move {
        let path = PathBuf::from(path);
        let directory = watched_directory.map(PathBuf::from);
        let mut last: Option<Stamp> = None;
        // Deliver once the first watch is in (it is added right after the start).
        tokio::task::yield_now().await;
        loop {
            if map.is_empty() && Rc::strong_count(&map) == 1 {
                return;
            }
            let now = stamp(&path, directory.as_deref());
            if now.is_some() && now != last {
                last = now;
                read_and_deliver(&path, &map);
            } else if now.is_none() && last.is_some() {
                last = None;
                map.fail(&format!("unable to read file: {}", path.display()));
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
                // New watches (say, the EDS names of the clusters CDS just added) get the
                // file's contents, read again rather than kept: a large file's resources
                // would otherwise stay in memory twice.
                _ = map.interest_changed.notified() => {
                    if last.is_some() {
                        deliver_to_new_watches(&path, &map);
                    }
                }
            }
        }
    });
}

fn read(path: &Path, map: &WatchMap) -> Result<(String, Vec<DecodedResource>), String> {
    read_text(path)
        .map_err(|e| format!("unable to read file: {}: {e}", path.display()))
        .and_then(|text| decode(Arc::new(text), map).map_err(|e| format!("{}: {e}", path.display())))
}

/// How much of the file is read between two offers of the CPU to the workers.
const READ_PIECE: u64 = 1 << 20;

/// The file's text, read a piece at a time: a 10,000-cluster EDS file is tens of MiB, and
/// its read is one more long stretch on the main thread otherwise ([`crate::pace`]).
fn read_text(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0).saturating_add(1));
    loop {
        crate::pace();
        if (&mut file).take(READ_PIECE).read_to_end(&mut bytes)? == 0 {
            break;
        }
    }
    String::from_utf8(bytes)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "stream did not contain valid UTF-8"))
}

/// Reads the file and delivers it to every watch.
fn read_and_deliver(path: &Path, map: &WatchMap) {
    map.count_attempt();
    let result = match read(path, map) {
        Ok((version, resources)) => {
            map.deliver_state_of_the_world(&version, resources).map_err(|e| format!("{}: {e}", path.display()))
        }
        Err(e) => {
            map.count_rejected();
            Err(e)
        }
    };
    if let Err(e) = result {
        tracing::warn!("{} update from {} rejected: {e}", map.resource_type.short_name(), path.display());
    }
}

/// Delivers the file's current contents to the watches that have not seen it.
fn deliver_to_new_watches(path: &Path, map: &WatchMap) {
    let result = read(path, map).and_then(|(version, resources)| map.deliver_to_new_watches(&version, resources));
    if let Err(e) = result {
        tracing::warn!("{} update from {} rejected: {e}", map.resource_type.short_name(), path.display());
    }
}

/// Parses a `DiscoveryResponse`: `version_info` and `resources`, each either the resource
/// itself (with its `@type`) or a `Resource` wrapper holding it under `resource`.
fn decode(text: Arc<String>, map: &WatchMap) -> Result<(String, Vec<DecodedResource>), String> {
    // JSON is YAML, but the JSON parser is several times faster on a large file.
    if text.trim_start().starts_with('{') {
        // Whatever the quick way refuses, the whole tree is parsed to say why, so that the
        // NACK reads the same either way.
        if let Some(decoded) = decode_json_items(&text, map) {
            return Ok(decoded);
        }
    }
    decode_tree(&text, map)
}

/// The quick way for a JSON file: each resource is parsed on its own and kept as its place in
/// the file's text ([`DecodedResource::from_json_item`]), so that the whole file never exists
/// as one tree (about twelve times its size). `None` if anything is wrong with the file.
fn decode_json_items(text: &Arc<String>, map: &WatchMap) -> Option<(String, Vec<DecodedResource>)> {
    let response: ResponseItems = serde_json::from_str(text).ok()?;
    let version = match response.version_info.or(response.version_info_camel) {
        Some(raw) => version_of(Some(serde_json::from_str(raw.get()).ok()?)),
        None => version_of(None),
    };
    let resources = response
        .resources
        .unwrap_or_default()
        .into_iter()
        .map(|item| {
            crate::pace();
            // The item is a slice of `text`: its place there, found from the two addresses.
            let start = (item.get().as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
            let at = start..start.checked_add(item.get().len())?;
            DecodedResource::from_json_item(map.resource_type, text, at, &version).ok()
        })
        .collect::<Option<Vec<_>>>()?;
    Some((version, resources))
}

/// A `DiscoveryResponse`'s two fields, found in one pass over the file's text, the main
/// thread yielding between resources ([`crate::pace`]); other fields are skipped. Where a key
/// comes twice, the last one counts, as in a parsed tree.
#[derive(Default)]
struct ResponseItems<'a> {
    version_info: Option<&'a RawValue>,
    version_info_camel: Option<&'a RawValue>,
    resources: Option<Vec<&'a RawValue>>,
}

impl<'de> serde::Deserialize<'de> for ResponseItems<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ResponseVisitor)
    }
}

struct ResponseVisitor;

impl<'de> serde::de::Visitor<'de> for ResponseVisitor {
    type Value = ResponseItems<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a DiscoveryResponse")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut fields: A) -> Result<Self::Value, A::Error> {
        let mut response = ResponseItems::default();
        while let Some(key) = fields.next_key::<std::borrow::Cow<'de, str>>()? {
            match &*key {
                "version_info" => response.version_info = Some(fields.next_value()?),
                "versionInfo" => response.version_info_camel = Some(fields.next_value()?),
                "resources" => response.resources = fields.next_value::<Option<PacedItems>>()?.map(|items| items.0),
                _ => {
                    fields.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(response)
    }
}

/// The `resources` list, each item left as its text.
struct PacedItems<'a>(Vec<&'a RawValue>);

impl<'de> serde::Deserialize<'de> for PacedItems<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(ItemsVisitor)
    }
}

struct ItemsVisitor;

impl<'de> serde::de::Visitor<'de> for ItemsVisitor {
    type Value = PacedItems<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of resources")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(items.size_hint().unwrap_or(0));
        while let Some(item) = items.next_element::<&'de RawValue>()? {
            crate::pace();
            out.push(item);
        }
        Ok(PacedItems(out))
    }
}

/// The whole file as one tree: YAML files, and the reason a JSON file is refused.
fn decode_tree(text: &str, map: &WatchMap) -> Result<(String, Vec<DecodedResource>), String> {
    let mut response: Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| format!("unable to parse: {e}"))?
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| format!("unable to parse: {e}"))?
    };
    let Value::Object(fields) = &mut response else {
        return Err("a DiscoveryResponse must be a mapping".into());
    };
    // Each resource is normalized on its own (`DecodedResource::from_json`), between which the
    // main thread may yield; here only the response's own two fields are read.
    let version = version_of(fields.get("version_info").or_else(|| fields.get("versionInfo")).cloned());
    let resources = match fields.remove("resources") {
        Some(Value::Array(items)) => items,
        Some(Value::Null) | None => Vec::new(),
        Some(_) => return Err("resources: must be a list".into()),
    };
    resources
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            crate::pace();
            DecodedResource::from_json(map.resource_type, unwrap_item(item), &version)
                .map_err(|e| format!("resources[{i}]: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(|resources| (version, resources))
}

/// The response's `version_info`, as text whatever its JSON type.
fn version_of(value: Option<Value>) -> String {
    match value {
        Some(Value::String(v)) => v,
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::ResourceType;

    const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";

    fn values(decoded: &(String, Vec<DecodedResource>)) -> Vec<(String, String, Value)> {
        decoded.1.iter().map(|r| (r.name.clone(), r.version.clone(), r.value().unwrap())).collect()
    }

    #[test]
    fn json_items_give_the_trees_of_the_whole_file() {
        let map = WatchMap::new(ResourceType::Cluster);
        let text = format!(
            r#"{{"versionInfo": 7, "resources": [
                {{"@type": "{CLUSTER}", "name": "a", "connectTimeout": "1s", "metadata": {{"filter_metadata": {{"x": {{"someKey": 0.30000000000000004}}}}}}}},
                {{"@type": "type.googleapis.com/envoy.service.discovery.v3.Resource", "resource": {{"@type": "{CLUSTER}", "name": "b", "lb_policy": null}}}}
            ], "nonce": "n"}}"#
        );
        let quick = decode_json_items(&Arc::new(text.clone()), &map).unwrap();
        let tree = decode_tree(&text, &map).unwrap();
        assert_eq!(quick.0, "7");
        assert_eq!(values(&quick), values(&tree));
        assert_eq!(values(&quick)[1].2, serde_json::json!({"name": "b"}));
    }

    #[test]
    fn refused_json_files_read_as_before() {
        let map = WatchMap::new(ResourceType::Cluster);
        for (text, error) in [
            ("{\"resources\": [", "unable to parse: EOF while parsing a list at line 1 column 15"),
            ("{\"resources\": 1}", "resources: must be a list"),
            ("{\"resources\": [{\"name\": \"\"}]}", "resources[0]: CDS resource without 'name'"),
            ("{\"resources\": [1]}", "resources[0]: CDS resource is not an object"),
            ("{} x", "unable to parse: trailing characters at line 1 column 4"),
        ] {
            assert!(decode_json_items(&Arc::new(text.to_string()), &map).is_none(), "{text}");
            assert_eq!(decode(Arc::new(text.to_string()), &map).unwrap_err(), error, "{text}");
        }
        let decoded = decode(Arc::new("{\"resources\": null, \"version_info\": null}".into()), &map).unwrap();
        assert_eq!((decoded.0.as_str(), decoded.1.len()), ("", 0));
    }
}
