//! Label selectors in their string form (`-l`, `labelSelector=`): parsing
//! never panics, keys and values it accepts are valid label keys and values,
//! and matching agrees with each requirement's operator.
#![no_main]

use berth_proto::labels::{check_key, check_value, Operator, Selector};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(selector) = Selector::parse(text) else { return };
    for requirement in selector.requirements() {
        check_key(&requirement.key)
            .unwrap_or_else(|e| panic!("{text:?} accepted an invalid key: {e}"));
        for value in &requirement.values {
            check_value(value)
                .unwrap_or_else(|e| panic!("{text:?} accepted an invalid value: {e}"));
        }
        let none = BTreeMap::new();
        let first = requirement.values.first().cloned().unwrap_or_default();
        let with = BTreeMap::from([(requirement.key.clone(), first)]);
        let (on_none, on_with) = (requirement.matches(&none), requirement.matches(&with));
        match requirement.operator {
            Operator::Equals | Operator::In | Operator::Exists => assert!(on_with && !on_none),
            Operator::NotEquals | Operator::NotIn | Operator::DoesNotExist => {
                assert!(!on_with && on_none)
            }
        }
    }
    // Labels made of the selector's own words exercise matching.
    let labels: BTreeMap<String, String> = selector
        .requirements()
        .iter()
        .map(|r| (r.key.clone(), r.values.last().cloned().unwrap_or_default()))
        .collect();
    let _ = selector.matches(&labels);
});
