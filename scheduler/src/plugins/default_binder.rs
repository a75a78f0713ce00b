//! Binds through the API's pods/binding subresource, with the leader's
//! fenced client: a scheduler that lost its lease cannot bind.

use crate::framework::{Bind, BindOutcome, PodInfo};
use berth_client::{Api, Client};
use berth_proto::core_v1::Pod;
use futures::future::BoxFuture;

pub struct DefaultBinder {
    client: Client,
}

impl DefaultBinder {
    pub fn new(client: Client) -> DefaultBinder {
        DefaultBinder { client }
    }
}

impl Bind for DefaultBinder {
    fn name(&self) -> &'static str {
        "DefaultBinder"
    }

    fn bind<'a>(&'a self, pod: &'a PodInfo, node: &'a str) -> BoxFuture<'a, BindOutcome> {
        Box::pin(async move {
            let pods = Api::<Pod>::namespaced(&self.client, pod.namespace());
            match pods.bind(pod.name(), node).await {
                Ok(_) => BindOutcome::Bound,
                Err(e) if e.is_not_found() || e.is_conflict() => BindOutcome::Gone(e.to_string()),
                Err(e) => BindOutcome::Failed(e.to_string()),
            }
        })
    }
}
