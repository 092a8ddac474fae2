//! The config texts of CDS clusters, kept for `/config_dump`, shared between clusters alike.
//!
//! A control plane stamps its clusters from templates: Istio's or Envoy Gateway's clusters of
//! one kind differ in their name (which reappears as the EDS `service_name`, the SNI or the
//! `alt_stat_name`) and little else. Each cluster's compact JSON text is kept with its name cut
//! out, and equal texts are kept once: 10,000 such clusters hold one text, where each held its
//! own (~160 bytes a cluster in the `xds_scale.py` push).

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use rustc_hash::FxHashSet;

/// Stands for the cluster's name in a kept text. Compact JSON text never holds a NUL as is
/// (serde_json writes control characters escaped), so cutting the name out and putting it
/// back gives the text as it was, wherever and however often the name occurs.
const NAME: &str = "\0";

/// A cluster's config text with its name cut out, shared with the clusters alike.
#[derive(Clone, Debug)]
pub struct ConfigText(Arc<str>);

impl ConfigText {
    /// The text as it came, for the cluster named `name`.
    pub fn restore(&self, name: &str) -> String {
        match json_escaped(name) {
            Some(escaped) => self.0.replace(NAME, &escaped),
            None => self.0.to_string(),
        }
    }
}

/// The texts of the clusters the cluster manager keeps (main thread only).
#[derive(Default)]
pub struct ConfigTexts {
    texts: RefCell<FxHashSet<Arc<str>>>,
    /// The number of texts after the last sweep of those no cluster holds any more.
    swept: Cell<usize>,
}

impl ConfigTexts {
    /// `raw` (the cluster named `name`) as a [`ConfigText`], the same one as any earlier
    /// cluster's of that shape.
    pub fn keep(&self, name: &str, raw: &serde_json::Value) -> ConfigText {
        let text = raw.to_string();
        let cut = match json_escaped(name) {
            Some(escaped) => text.replace(escaped.as_str(), NAME),
            None => text,
        };
        let mut texts = self.texts.borrow_mut();
        if let Some(kept) = texts.get(cut.as_str()) {
            return ConfigText(kept.clone());
        }
        // Texts whose clusters are gone are dropped now and then, when the set has doubled.
        if texts.len() >= 2 * self.swept.get() + 64 {
            texts.retain(|t| Arc::strong_count(t) > 1);
            self.swept.set(texts.len());
        }
        let kept: Arc<str> = Arc::from(cut);
        texts.insert(kept.clone());
        ConfigText(kept)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.texts.borrow().len()
    }
}

/// `name` as it appears inside a JSON string, or `None` when it is empty (nothing to cut).
fn json_escaped(name: &str) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    let quoted = serde_json::Value::from(name).to_string();
    Some(quoted.get(1..quoted.len() - 1).unwrap_or_default().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn clusters_alike_share_one_text_and_each_gets_its_own_back() {
        let texts = ConfigTexts::default();
        let cluster = |name: &str| {
            json!({"name": name, "type": "EDS", "eds_cluster_config": {"service_name": name},
                   "alt_stat_name": format!("{name}_stats"), "connect_timeout": "1s"})
        };
        let a = texts.keep("svc1", &cluster("svc1"));
        let b = texts.keep("svc10", &cluster("svc10"));
        assert!(Arc::ptr_eq(&a.0, &b.0), "one text for both");
        assert_eq!(texts.len(), 1);
        for (text, name) in [(&a, "svc1"), (&b, "svc10")] {
            assert_eq!(text.restore(name), cluster(name).to_string());
        }
        // Another shape is kept apart.
        let c = texts.keep("svc2", &json!({"name": "svc2", "type": "STATIC"}));
        assert_eq!(texts.len(), 2);
        assert_eq!(c.restore("svc2"), r#"{"name":"svc2","type":"STATIC"}"#);
    }

    #[test]
    fn names_that_need_escaping_or_occur_inside_other_words_come_back_exact() {
        let texts = ConfigTexts::default();
        for name in ["a", "x\"y\\z", "outbound|80||web.default.svc.cluster.local", "é\u{1}", "type"] {
            let raw = json!({"name": name, "type": "EDS", "metadata": {"filter_metadata": {name: {"k": name}}},
                             "note": format!("{name}{name} and a {name}")});
            assert_eq!(texts.keep(name, &raw).restore(name), raw.to_string(), "{name:?}");
        }
        // An empty name cuts nothing.
        let raw = json!({"name": "", "type": "STATIC"});
        assert_eq!(texts.keep("", &raw).restore(""), raw.to_string());
    }

    #[test]
    fn texts_no_cluster_holds_are_swept() {
        let texts = ConfigTexts::default();
        let held: Vec<ConfigText> = (0..10).map(|i| texts.keep("c", &json!({"name": "c", "weight": i}))).collect();
        for i in 10..200 {
            drop(texts.keep("c", &json!({"name": "c", "weight": i})));
        }
        assert!(texts.len() < 150, "dropped texts are swept: {} kept", texts.len());
        for (i, text) in held.iter().enumerate() {
            assert_eq!(text.restore("c"), json!({"name": "c", "weight": i}).to_string());
        }
    }
}
