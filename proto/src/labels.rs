//! Label selectors as Kubernetes defines them: the string syntax
//! (`app=web,tier!=db,env in (a,b),!canary,gpu`) and LabelSelector objects
//! (matchLabels, matchExpressions), parsed once into requirements that every
//! component matches the same way.

use crate::meta_v1::LabelSelector;
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operator {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    pub values: Vec<String>,
}

/// A parsed selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
    /// A LabelSelector that can never match (Kubernetes: nil vs empty).
    nothing: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector {input:?}: {reason}")]
pub struct SelectorError {
    pub input: String,
    pub reason: String,
}

impl Requirement {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::Equals | Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotEquals | Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

impl Selector {
    /// Matches everything.
    pub fn everything() -> Selector {
        Selector::default()
    }

    /// Matches nothing.
    pub fn nothing() -> Selector {
        Selector { requirements: Vec::new(), nothing: true }
    }

    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty() && !self.nothing
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Parses the string form used in `-l` and `labelSelector=`.
    pub fn parse(input: &str) -> Result<Selector, SelectorError> {
        let err =
            |reason: &str| SelectorError { input: input.to_string(), reason: reason.to_string() };
        let mut requirements = Vec::new();
        for term in split_terms(input).map_err(|r| err(&r))? {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            requirements.push(parse_term(term).map_err(|r| err(&r))?);
        }
        Ok(Selector { requirements, nothing: false })
    }

    /// From a LabelSelector object; `None` (no selector) matches nothing, as
    /// Kubernetes treats a nil selector on a workload.
    pub fn from_label_selector(
        selector: Option<&LabelSelector>,
    ) -> Result<Selector, SelectorError> {
        let Some(selector) = selector else { return Ok(Selector::nothing()) };
        let mut requirements: Vec<Requirement> = selector
            .match_labels
            .iter()
            .map(|(k, v)| Requirement {
                key: k.clone(),
                operator: Operator::Equals,
                values: vec![v.clone()],
            })
            .collect();
        for expr in &selector.match_expressions {
            let bad = |reason: String| SelectorError { input: format!("{expr:?}"), reason };
            let operator = match expr.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => return Err(bad(format!("unknown operator {other:?}"))),
            };
            let needs_values = matches!(operator, Operator::In | Operator::NotIn);
            if needs_values == expr.values.is_empty() {
                return Err(bad(if needs_values {
                    "In and NotIn need values".into()
                } else {
                    "Exists and DoesNotExist take no values".into()
                }));
            }
            check_key(&expr.key).map_err(bad)?;
            requirements.push(Requirement {
                key: expr.key.clone(),
                operator,
                values: expr.values.clone(),
            });
        }
        Ok(Selector { requirements, nothing: false })
    }
}

/// Splits at commas outside parentheses.
fn split_terms(input: &str) -> Result<Vec<&str>, String> {
    let mut terms = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("unbalanced ')'".into());
                }
            }
            ',' if depth == 0 => {
                terms.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '('".into());
    }
    terms.push(&input[start..]);
    Ok(terms)
}

fn parse_term(term: &str) -> Result<Requirement, String> {
    if let Some(key) = term.strip_prefix('!') {
        let key = key.trim();
        check_key(key)?;
        return Ok(Requirement {
            key: key.into(),
            operator: Operator::DoesNotExist,
            values: vec![],
        });
    }
    for (op, operator) in
        [("!=", Operator::NotEquals), ("==", Operator::Equals), ("=", Operator::Equals)]
    {
        if let Some((key, value)) = term.split_once(op) {
            let (key, value) = (key.trim(), value.trim());
            check_key(key)?;
            check_value(value)?;
            return Ok(Requirement { key: key.into(), operator, values: vec![value.into()] });
        }
    }
    let words: Vec<&str> = term.splitn(2, char::is_whitespace).collect();
    if let [key, rest] = words[..] {
        let rest = rest.trim();
        let (operator, set) = if let Some(set) = rest.strip_prefix("notin") {
            (Operator::NotIn, set)
        } else if let Some(set) = rest.strip_prefix("in") {
            (Operator::In, set)
        } else {
            return Err(format!("expected 'in' or 'notin' after {key:?}"));
        };
        let set = set.trim();
        let inner = set
            .strip_prefix('(')
            .and_then(|s| s.strip_suffix(')'))
            .ok_or_else(|| format!("expected a parenthesized set of values after {key:?}"))?;
        let values: Vec<String> =
            inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect();
        if values.is_empty() {
            return Err(format!("empty set of values for {key:?}"));
        }
        check_key(key)?;
        for v in &values {
            check_value(v)?;
        }
        return Ok(Requirement { key: key.into(), operator, values });
    }
    check_key(term)?;
    Ok(Requirement { key: term.into(), operator: Operator::Exists, values: vec![] })
}

/// A label key: an optional DNS-subdomain prefix and '/', then a name of at
/// most 63 characters.
pub fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() || prefix.len() > 253 || !prefix.split('.').all(is_dns_label) {
            return Err(format!("key {key:?}: prefix must be a DNS subdomain"));
        }
    }
    if name.is_empty() || name.len() > 63 || !is_label_name(name) {
        return Err(format!(
            "key {key:?}: name must be 63 characters or less, alphanumeric, '-', '_' or '.', and begin and end with an alphanumeric character"
        ));
    }
    Ok(())
}

/// A label value: empty, or like a key's name part.
pub fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() || (value.len() <= 63 && is_label_name(value)) {
        Ok(())
    } else {
        Err(format!(
            "value {value:?} must be 63 characters or less, alphanumeric, '-', '_' or '.', and begin and end with an alphanumeric character"
        ))
    }
}

fn is_label_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta_v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn string_selectors_with_every_operator() {
        let s =
            Selector::parse("app=web, tier!=db,env in (prod, staging),!canary,gpu,zone notin (a)")
                .unwrap();
        assert_eq!(s.requirements().len(), 6);
        let good = labels(&[("app", "web"), ("env", "prod"), ("gpu", ""), ("zone", "b")]);
        assert!(s.matches(&good));
        let mut bad = good.clone();
        bad.insert("canary".into(), "1".into());
        assert!(!s.matches(&bad));
        let mut bad = good.clone();
        bad.insert("env".into(), "dev".into());
        assert!(!s.matches(&bad));
        assert!(Selector::parse("").unwrap().matches(&BTreeMap::new()));
        assert!(Selector::parse("a==b").unwrap().matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn bad_selectors_name_the_problem() {
        for bad in ["app in web", "app in ()", "(", "a=b)", "-bad=x", "a=b c", "example.com/=x"] {
            let err = Selector::parse(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn label_selector_objects() {
        let sel = LabelSelector {
            match_labels: [("app".to_string(), "web".to_string())].into(),
            match_expressions: vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: vec!["frontend".into()],
            }],
        };
        let s = Selector::from_label_selector(Some(&sel)).unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "frontend")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
        assert!(!Selector::from_label_selector(None).unwrap().matches(&BTreeMap::new()));
        let empty = Selector::from_label_selector(Some(&LabelSelector::default())).unwrap();
        assert!(empty.matches(&BTreeMap::new()));
        let wrong = LabelSelector {
            match_expressions: vec![LabelSelectorRequirement {
                key: "a".into(),
                operator: "Exists".into(),
                values: vec!["x".into()],
            }],
            ..Default::default()
        };
        assert!(Selector::from_label_selector(Some(&wrong)).is_err());
    }
}
