//! `GET /cluster`: what this node is and owns, for operators and tests.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::ownership::Cluster;

pub(crate) fn router(cluster: Cluster) -> axum::Router {
    axum::Router::new()
        .route("/cluster", axum::routing::get(status))
        .route(
            crate::handoff::PATH,
            axum::routing::post(crate::handoff::accept),
        )
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::handoff::MAX_BODY,
        ))
        .with_state(cluster)
}

async fn status(State(cluster): State<Cluster>) -> Json<Value> {
    let rooms: Vec<Value> = cluster
        .owned()
        .into_iter()
        .map(|(k, epoch)| json!({"party": k.party, "room": k.room, "epoch": epoch}))
        .collect();
    Json(json!({"node": cluster.config().node_id, "rooms": rooms}))
}
