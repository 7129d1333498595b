//! README command 1 itself: `bash edge/dev.sh` starts the Worker with `wrangler dev`, creates
//! the first org, prints its key once and pairs this machine, whose daemon then shows online;
//! a second run reuses the state, daemon included.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use tether_tests::{Api, free_port, root};

/// Runs dev.sh until it says it is serving; answers the process and everything it printed.
fn start(port: u16, state: &std::path::Path) -> (Child, String) {
    let mut child = Command::new("bash")
        .arg(root().join("edge/dev.sh"))
        .env("PORT", port.to_string())
        .env("TETHER_STATE_DIR", state)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut printed = String::new();
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 {
        printed.push_str(&line);
        if line.contains("Ctrl-C stops the Worker") {
            break;
        }
        line.clear();
    }
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    (child, printed)
}

/// Stops dev.sh the way Ctrl-C would, so it stops wrangler and workerd too.
fn stop(mut child: Child) {
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    child.wait().unwrap();
}

/// Waits until the org's one host is online; answers its id.
async fn online_host(api: &Api) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, hosts) = api.get("/v1/hosts").await;
        let hosts = hosts.as_array().cloned().unwrap_or_default();
        assert!(hosts.len() <= 1, "one paired host: {hosts:?}");
        if let Some(h) = hosts.first().filter(|h| h["online"] == true) {
            return h["id"].as_str().unwrap().to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no host online: {hosts:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn dev_script_bootstraps_once_and_reuses_its_state() {
    let state = std::env::temp_dir().join(format!("tether-dev-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");

    let (first, printed) = start(port, &state);
    let key = printed
        .split_whitespace()
        .find(|w| w.starts_with("tk_") && w.len() > 40)
        .unwrap_or_else(|| panic!("no key printed:\n{printed}"))
        .to_owned();
    let api = Api::new(&url, &key);
    assert_eq!(api.get("/v1/me").await.1["role"], "owner");
    let host = online_host(&api).await;
    stop(first);

    let (second, printed) = start(port, &state);
    assert!(printed.contains("reusing the state"), "{printed}");
    assert!(
        !printed.contains("tk_"),
        "a second run prints no key:\n{printed}"
    );
    let (status, members) = Api::new(&url, &key).get("/v1/members").await;
    assert_eq!(status, 200, "the first run's key still works");
    assert_eq!(members.as_array().unwrap().len(), 1, "no second owner");
    assert_eq!(
        online_host(&api).await,
        host,
        "the same host is back online"
    );
    stop(second);
    let _ = std::fs::remove_dir_all(&state);
}
