//! Server-side apply and update tracking: a JSON object of
//! `{"object": ..., "writes": [...]}` where each write is
//! `{"manager": "m", "apply": {...}, "force": bool}` or
//! `{"manager": "m", "update": {...}}`. The writes run in order on the
//! object, recording managedFields as the API server does; none panics or
//! hangs, and an apply that conflicts leaves the object and its managed
//! fields as they were.
#![no_main]

use berth_patch::{apply, track_update, Manager};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = serde_json::from_slice::<Value>(data) else { return };
    let mut object = input.get("object").cloned();
    let mut managed = Vec::new();
    let Some(writes) = input.get("writes").and_then(Value::as_array) else { return };
    for write in writes {
        let name = write.get("manager").and_then(Value::as_str).unwrap_or("fuzz");
        let manager = Manager { name, api_version: "v1" };
        if let Some(config) = write.get("apply") {
            let force = write.get("force").and_then(Value::as_bool).unwrap_or(false);
            let before = managed.clone();
            match apply("Pod", "fuzz", object.as_ref(), config, &mut managed, &manager, force) {
                Ok(applied) => object = Some(applied),
                Err(_) => assert_eq!(managed, before, "a refused apply changed managedFields"),
            }
        } else if let Some(new) = write.get("update") {
            track_update(object.as_ref(), new, &mut managed, &manager);
            object = Some(new.clone());
        }
    }
});
