//! OTLP attributes as text: a point's attributes become its labels, a
//! resource's tell its senders apart in the cumulative state.

use std::fmt::Write as _;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};

use crate::monitor::sample::Labels;
use crate::monitor::sample_check::check_label;

/// Attributes as labels (values as text), moved out of `attrs`, and
/// whether each passed [`check_label`] on the way (checked here, while the
/// text is at hand, instead of walking the map again to check it).
pub fn labels_of(attrs: &mut Vec<KeyValue>) -> (Labels, bool) {
    // One by one: a point has a few attributes, and inserting them costs
    // less than collecting and sorting them first.
    let mut labels = Labels::new();
    let mut each_ok = true;
    for kv in attrs.drain(..) {
        let value = match kv.value.and_then(|v| v.value) {
            Some(any_value::Value::StringValue(s)) => s,
            other => text(other.map(|v| AnyValue { value: Some(v) }).as_ref()),
        };
        each_ok &= check_label(&kv.key, &value).is_ok();
        labels.insert(kv.key, value);
    }
    (labels, each_ok)
}

/// A resource's attributes as one key, sorted by name.
pub fn key_of(attrs: &[KeyValue]) -> String {
    let mut sorted: Vec<(&str, String)> = attrs
        .iter()
        .map(|kv| (kv.key.as_str(), text(kv.value.as_ref())))
        .collect();
    sorted.sort();
    let mut k = String::new();
    for (name, value) in sorted {
        let _ = write!(k, "{name}\u{2}{value}\u{3}");
    }
    k
}

/// An attribute's value as text: strings as they are, other kinds as JSON
/// would write them.
pub fn text(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => b.iter().map(|x| format!("{x:02x}")).collect(),
        Some(any_value::Value::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(|v| text(Some(v))).collect();
            format!("[{}]", items.join(","))
        }
        Some(any_value::Value::KvlistValue(l)) => {
            let items: Vec<String> = l
                .values
                .iter()
                .map(|kv| format!("{}={}", kv.key, text(kv.value.as_ref())))
                .collect();
            format!("{{{}}}", items.join(","))
        }
        #[allow(unreachable_patterns)]
        Some(_) => String::new(),
    }
}
