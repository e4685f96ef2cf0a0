//! Building DynamoDB expressions: every attribute goes through a `#name` placeholder (`status`
//! and others are reserved words) and every value through a `:value` placeholder, and only the
//! placeholders an expression uses are sent (DynamoDB refuses unused ones).

use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;

/// `ExpressionAttributeNames`: placeholder → attribute name.
pub(super) type AttributeNames = HashMap<String, String>;
/// `ExpressionAttributeValues`: placeholder → value.
pub(super) type AttributeValues = HashMap<String, AttributeValue>;

/// The placeholders of one request's expressions.
#[derive(Debug, Default)]
pub(super) struct Placeholders {
    names: AttributeNames,
    values: AttributeValues,
}

impl Placeholders {
    /// `#attr`, standing for the attribute `attr`.
    pub(super) fn name(&mut self, attr: &str) -> String {
        let placeholder = format!("#{attr}");
        self.names.insert(placeholder.clone(), attr.to_owned());
        placeholder
    }

    /// `:key`, standing for `value`. Each key names one value per request.
    pub(super) fn value(&mut self, key: &str, value: AttributeValue) -> String {
        let placeholder = format!(":{key}");
        let previous = self.values.insert(placeholder.clone(), value.clone());
        debug_assert!(
            previous.is_none_or(|p| p == value),
            "placeholder {placeholder} given two values"
        );
        placeholder
    }

    /// The `ExpressionAttributeNames` and `ExpressionAttributeValues` to send (`None` when empty).
    pub(super) fn into_maps(self) -> (Option<AttributeNames>, Option<AttributeValues>) {
        let names = (!self.names.is_empty()).then_some(self.names);
        let values = (!self.values.is_empty()).then_some(self.values);
        (names, values)
    }
}

/// The clauses of an `UpdateExpression`.
#[derive(Debug, Default)]
pub(super) struct UpdateExpression {
    set: Vec<String>,
    remove: Vec<String>,
}

impl UpdateExpression {
    /// `SET attr = value`.
    pub(super) fn set(&mut self, p: &mut Placeholders, attr: &str, value: AttributeValue) {
        let name = p.name(attr);
        let value = p.value(&format!("set_{attr}"), value);
        self.set.push(format!("{name} = {value}"));
    }

    /// `SET attr = value` when there is a value, `REMOVE attr` otherwise.
    pub(super) fn set_or_remove(&mut self, p: &mut Placeholders, attr: &str, value: Option<AttributeValue>) {
        match value {
            Some(v) => self.set(p, attr, v),
            None => self.remove(p, attr),
        }
    }

    /// A `SET` clause written out (`#a = #a + :one`).
    pub(super) fn set_clause(&mut self, clause: String) {
        self.set.push(clause);
    }

    /// `REMOVE attr`.
    pub(super) fn remove(&mut self, p: &mut Placeholders, attr: &str) {
        let name = p.name(attr);
        self.remove.push(name);
    }

    /// The expression text.
    pub(super) fn render(&self) -> String {
        let mut parts = Vec::new();
        if !self.set.is_empty() {
            parts.push(format!("SET {}", self.set.join(", ")));
        }
        if !self.remove.is_empty() {
            parts.push(format!("REMOVE {}", self.remove.join(", ")));
        }
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_render_set_then_remove_with_only_used_placeholders() {
        let mut p = Placeholders::default();
        let mut u = UpdateExpression::default();
        u.set(&mut p, "status", AttributeValue::S("running".into()));
        u.set_or_remove(&mut p, "exit_code", None);
        let attempts = p.name("attempts");
        let one = p.value("one", AttributeValue::N("1".into()));
        u.set_clause(format!("{attempts} = {attempts} + {one}"));
        assert_eq!(
            u.render(),
            "SET #status = :set_status, #attempts = #attempts + :one REMOVE #exit_code"
        );
        let (names, values) = p.into_maps();
        let names = names.expect("names");
        assert_eq!(names.len(), 3);
        assert_eq!(names.get("#exit_code").map(String::as_str), Some("exit_code"));
        assert_eq!(values.expect("values").len(), 2);
    }

    #[test]
    fn nothing_used_sends_nothing() {
        assert_eq!(Placeholders::default().into_maps(), (None, None));
    }
}
