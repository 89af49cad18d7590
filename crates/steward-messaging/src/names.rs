//! Validation of what clients name and send. Every rule here is documented in
//! `docs/protocol/messaging.md`; a violation is `INVALID_ARGUMENT` naming the field.
//!
//! Names are restricted to characters that are safe as NATS subject tokens and stream names
//! after the NATS backend's escaping, so both backends accept exactly the same requests.

use std::collections::BTreeMap;

/// Longest topic, group, producer or consumer id, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Longest tag, in bytes.
pub const MAX_TAG_LEN: usize = 64;
/// Longest client message id, in bytes.
pub const MAX_CLIENT_ID_LEN: usize = 128;
/// Most keys per message.
pub const MAX_KEYS: usize = 32;
/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 128;
/// Most properties per message.
pub const MAX_PROPERTIES: usize = 64;
/// Longest property name, in bytes.
pub const MAX_PROPERTY_NAME_LEN: usize = 64;
/// Longest property value, in bytes.
pub const MAX_PROPERTY_VALUE_LEN: usize = 1024;

/// A request field that breaks a rule: the field's name and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    /// The field, as named in the proto (`messages[3].topic`).
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl Invalid {
    /// `field` breaks a rule because of `reason`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: field.into(), reason: reason.into() }
    }
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// A topic or group name: 1–128 bytes of `[A-Za-z0-9_-]` in segments joined by single dots
/// (`orders`, `orders.eu`, `orders.dlq`).
///
/// # Errors
/// [`Invalid`] naming `field`.
pub fn check_name(field: &str, value: &str) -> Result<(), Invalid> {
    if value.is_empty() {
        return Err(Invalid::new(field, "must not be empty"));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(Invalid::new(field, format!("longer than {MAX_NAME_LEN} bytes")));
    }
    if value.split('.').any(|seg| seg.is_empty() || !seg.chars().all(name_char)) {
        return Err(Invalid::new(
            field,
            "only letters, digits, '-' and '_' in segments joined by single dots",
        ));
    }
    Ok(())
}

/// A producer or consumer id: 1–128 bytes of `[A-Za-z0-9_.-]`.
///
/// # Errors
/// [`Invalid`] naming `field`.
pub fn check_id(field: &str, value: &str) -> Result<(), Invalid> {
    if value.is_empty() {
        return Err(Invalid::new(field, "must not be empty"));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(Invalid::new(field, format!("longer than {MAX_NAME_LEN} bytes")));
    }
    if !value.chars().all(|c| name_char(c) || c == '.') {
        return Err(Invalid::new(field, "only letters, digits, '-', '_' and '.'"));
    }
    Ok(())
}

/// A tag: 1–64 bytes of `[A-Za-z0-9_-]` (a single NATS subject token).
///
/// # Errors
/// [`Invalid`] naming `field`.
pub fn check_tag(field: &str, value: &str) -> Result<(), Invalid> {
    if value.is_empty() || value.len() > MAX_TAG_LEN || !value.chars().all(name_char) {
        return Err(Invalid::new(field, format!("1 to {MAX_TAG_LEN} letters, digits, '-' or '_'")));
    }
    Ok(())
}

fn printable(value: &str) -> bool {
    value.chars().all(|c| c.is_ascii_graphic())
}

/// A client message id: 1–128 bytes of printable ASCII without spaces.
///
/// # Errors
/// [`Invalid`] naming `field`.
pub fn check_client_id(field: &str, value: &str) -> Result<(), Invalid> {
    if value.is_empty() {
        return Err(Invalid::new(field, "is required (it de-duplicates retries)"));
    }
    if value.len() > MAX_CLIENT_ID_LEN || !printable(value) {
        return Err(Invalid::new(
            field,
            format!("1 to {MAX_CLIENT_ID_LEN} bytes of printable ASCII without spaces"),
        ));
    }
    Ok(())
}

/// Keys: at most 32, each 1–128 bytes of printable ASCII without spaces or commas.
///
/// # Errors
/// [`Invalid`] naming `field` (and the key's index).
pub fn check_keys(field: &str, keys: &[String]) -> Result<(), Invalid> {
    if keys.len() > MAX_KEYS {
        return Err(Invalid::new(field, format!("more than {MAX_KEYS} keys")));
    }
    for (i, key) in keys.iter().enumerate() {
        if key.is_empty() || key.len() > MAX_KEY_LEN || !printable(key) || key.contains(',') {
            return Err(Invalid::new(
                format!("{field}[{i}]"),
                format!("1 to {MAX_KEY_LEN} bytes of printable ASCII without spaces or commas"),
            ));
        }
    }
    Ok(())
}

/// Properties: at most 64; names 1–64 bytes of `[A-Za-z0-9_.-]`; values at most 1024 bytes
/// of UTF-8 without control characters.
///
/// # Errors
/// [`Invalid`] naming `field` (and the property's name).
pub fn check_properties(field: &str, props: &BTreeMap<String, String>) -> Result<(), Invalid> {
    if props.len() > MAX_PROPERTIES {
        return Err(Invalid::new(field, format!("more than {MAX_PROPERTIES} properties")));
    }
    for (name, value) in props {
        if name.is_empty()
            || name.len() > MAX_PROPERTY_NAME_LEN
            || !name.chars().all(|c| name_char(c) || c == '.')
        {
            return Err(Invalid::new(
                format!("{field}.{name}"),
                format!("names are 1 to {MAX_PROPERTY_NAME_LEN} letters, digits, '-', '_' or '.'"),
            ));
        }
        if value.len() > MAX_PROPERTY_VALUE_LEN || value.chars().any(char::is_control) {
            return Err(Invalid::new(
                format!("{field}.{name}"),
                format!(
                    "values are at most {MAX_PROPERTY_VALUE_LEN} bytes without control characters"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_take_dotted_segments_and_nothing_else() {
        for ok in ["orders", "orders.eu", "a-b_c.dlq", &"x".repeat(128)] {
            assert_eq!(check_name("topic", ok), Ok(()), "{ok}");
        }
        for bad in ["", ".a", "a.", "a..b", "a b", "a*", "a>", "ä", &"x".repeat(129)] {
            let err = check_name("topic", bad).unwrap_err();
            assert_eq!(err.field, "topic", "{bad}");
        }
    }

    #[test]
    fn tags_ids_keys_and_properties_have_their_limits() {
        assert!(check_tag("tag", "eu-1").is_ok());
        assert!(check_tag("tag", "a.b").is_err());
        assert!(check_id("producer_id", "p.1").is_ok());
        assert!(check_id("producer_id", "p 1").is_err());
        assert!(check_client_id("client_id", "").unwrap_err().reason.contains("required"));
        assert!(check_client_id("client_id", "id-1").is_ok());
        assert!(check_keys("keys", &["k,1".into()]).unwrap_err().field == "keys[0]");
        assert!(check_keys("keys", &vec!["k".to_owned(); 33]).is_err());
        let mut props = BTreeMap::new();
        props.insert("trace.id".to_owned(), "abc".to_owned());
        assert!(check_properties("properties", &props).is_ok());
        props.insert("bad name".to_owned(), String::new());
        assert!(check_properties("properties", &props).is_err());
        props.clear();
        props.insert("x".to_owned(), "line\nbreak".to_owned());
        assert!(check_properties("properties", &props).is_err());
    }
}
