//! State survives a restart of workerd with persisted storage.

use serde_json::json;
use tether_tests::{Api, Worker};

#[tokio::test]
async fn state_survives_a_workerd_restart() {
    let dir = std::env::temp_dir().join(format!("tether-persist-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (jwt, boot) = ("j".repeat(40), "boot-token-for-this-test".to_owned());
    let key = {
        let w = Worker::start_with(Some(&dir), &jwt, &boot).unwrap();
        let key = w.bootstrap().await.unwrap();
        let api = Api::new(&w.url, &key);
        assert_eq!(
            api.post("/v1/tasks", json!({"title": "before restart"}))
                .await
                .0,
            201
        );
        key
    };
    let w = Worker::start_with(Some(&dir), &jwt, &boot).unwrap();
    let api = Api::new(&w.url, &key);
    let (s, t) = api.get("/v1/tasks/TET-1").await;
    assert_eq!((s, t["title"].as_str()), (200, Some("before restart")));
    assert_eq!(
        api.post("/v1/tasks", json!({"title": "after"})).await.1["slug"],
        "TET-2"
    );
    assert!(
        w.bootstrap().await.is_err(),
        "a second bootstrap is refused after restart"
    );
    drop(w);
    let _ = std::fs::remove_dir_all(&dir);
}
