//! Watch: every change after a resourceVersion, as ADDED / MODIFIED /
//! DELETED events in revision order, filtered by label and field selectors
//! (an object that stops matching is reported DELETED, one that starts
//! matching ADDED),
//! with BOOKMARK events for progress and an explicit Expired error when the
//! revision was compacted.

use super::list::Fields;
use super::{decode, parse_resource_version, prefix, Registry};
use crate::error::ApiError;
use berth_proto::etcd::mvccpb::event::EventType;
use berth_proto::labels::Selector;
use berth_proto::Resource;
use berth_raft_store::{KeyValue, StoreError, Watch, WatchOptions};
use std::marker::PhantomData;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq)]
pub enum WatchEvent<T> {
    Added(T),
    Modified(T),
    Deleted(T),
    /// Every change up to this resourceVersion has been delivered.
    Bookmark(String),
}

pub struct WatchStream<T> {
    watch: Watch,
    labels: Selector,
    fields: Fields,
    pending: std::collections::VecDeque<WatchEvent<T>>,
    _type: PhantomData<T>,
}

impl<T: Resource> WatchStream<T> {
    /// The next event; `None` when the watch ended; `Err(Expired)` when the
    /// start revision was compacted (relist and watch again).
    pub async fn next(&mut self) -> Option<Result<WatchEvent<T>, ApiError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            let batch = match self.watch.next().await? {
                Ok(batch) => batch,
                Err(StoreError::Compacted { requested, compact_revision }) => {
                    return Some(Err(ApiError::Expired { requested, oldest: compact_revision }))
                }
                Err(e) => return Some(Err(e.into())),
            };
            if batch.events.is_empty() {
                return Some(Ok(WatchEvent::Bookmark(batch.revision.to_string())));
            }
            for event in batch.events {
                match self.translate(event) {
                    Ok(Some(e)) => self.pending.push_back(e),
                    Ok(None) => {}
                    Err(e) => return Some(Err(e)),
                }
            }
        }
    }

    /// Asks for a bookmark after everything delivered so far.
    pub fn request_bookmark(&self) {
        self.watch.request_progress();
    }

    fn translate(
        &self,
        event: berth_proto::etcd::mvccpb::Event,
    ) -> Result<Option<WatchEvent<T>>, ApiError> {
        let matches = |o: &T| self.labels.matches(&o.metadata().labels) && self.fields.matches(o);
        let before: Option<T> = event.prev_kv.as_ref().map(decode).transpose()?;
        if event.r#type == EventType::Delete as i32 {
            let Some(mut gone) = before else { return Ok(None) };
            if let Some(kv) = &event.kv {
                gone.metadata_mut().resource_version = kv.mod_revision.to_string();
            }
            return Ok(matches(&gone).then_some(WatchEvent::Deleted(gone)));
        }
        let Some(kv) = &event.kv else { return Ok(None) };
        let now: T = decode(kv)?;
        let was = before.as_ref().is_some_and(matches);
        Ok(match (was, matches(&now)) {
            (false, true) => Some(WatchEvent::Added(now)),
            (true, true) => Some(WatchEvent::Modified(now)),
            // Left the selection: the watcher sees it go, at this revision.
            (true, false) => Some(WatchEvent::Deleted(now)),
            (false, false) => None,
        })
    }
}

impl<S: KeyValue + Clone + 'static> Registry<S> {
    /// Watches a resource (in one namespace, or all) for changes after
    /// `resource_version` ("" or "0": after now).
    pub fn watch<T: Resource>(
        &self,
        namespace: Option<&str>,
        resource_version: &str,
        label_selector: &str,
        field_selector: &str,
        bookmark_every: Option<Duration>,
    ) -> Result<WatchStream<T>, ApiError> {
        let labels =
            Selector::parse(label_selector).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let fields = Fields::parse(field_selector)?;
        let start = match resource_version {
            "" | "0" => 0,
            rv => parse_resource_version(rv)? + 1,
        };
        let prefix = prefix::<T>(namespace);
        let mut end = prefix.clone().into_bytes();
        *end.last_mut().expect("a prefix ends with '/'") += 1;
        let watch = self.store.watch(WatchOptions {
            key: prefix.into_bytes(),
            range_end: end,
            start_revision: start,
            prev_kv: true,
            progress_interval: bookmark_every,
            ..Default::default()
        });
        Ok(WatchStream { watch, labels, fields, pending: Default::default(), _type: PhantomData })
    }
}
