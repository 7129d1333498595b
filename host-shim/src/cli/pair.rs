//! `tether pair`: register this machine with an org.

use anyhow::{Context, Result, bail};
use std::process::ExitCode;
use tether::api::{ApiClient, PairingRequest};
use tether::config::Config;
use tether::identity::Identity;
use tether::pairing::{self, Outcome};
use tether::paths::Paths;
use tether::state::{Pairing, State};

pub async fn pair(
    paths: &Paths,
    server: Option<String>,
    name: Option<String>,
    force: bool,
) -> Result<ExitCode> {
    let config = Config::load(&paths.config_file())?;
    let Some(server) = server.or(config.server) else {
        bail!("which server? pass --server URL (or log in first with `tether login --server URL`)");
    };
    let client = ApiClient::new(&server, None)?;
    let server = client.server().to_owned();

    let state = State::open(&paths.state_db()).await?;
    if let Some(p) = state.pairing().await?
        && !force
    {
        bail!(
            "this machine is already paired with {} as host {} (org {}); \
             `tether pair --force` pairs it again (revoke the old host with `tether hosts revoke {}`)",
            p.server,
            p.host_id,
            p.org_id,
            p.host_id
        );
    }

    let (identity, created) = Identity::load_or_create(&paths.key_file())?;
    if created {
        eprintln!(
            "Created the host key {} (fingerprint {}).",
            paths.key_file().display(),
            identity.fingerprint()
        );
    }
    let agents = tether::doctor::detect_agents(tether::doctor::VERSION_TIMEOUT).await;
    let request = PairingRequest {
        public_key: identity.public_key_base64url(),
        name: name.unwrap_or_else(pairing::host_name),
        os: std::env::consts::OS.to_owned(),
        arch: std::env::consts::ARCH.to_owned(),
        agents,
    };
    let started = match client.start_pairing(&request).await {
        Ok(s) => s,
        Err(e) if e.status() == Some(409) => bail!(
            "{e}: this machine's key ({}) already belongs to a host. If that host is this \
             machine, its pairing was lost: revoke it (`tether hosts revoke ID`) and pair again",
            identity.fingerprint()
        ),
        Err(e) => return Err(e).with_context(|| format!("asking {server} for a pairing code")),
    };

    let code = &started.code;
    println!();
    println!("    Pairing code:  {code}");
    println!();
    println!("Approve it as a member of the org, from any machine where you are logged in:");
    println!("    tether hosts approve {code}");
    println!("or with the API:");
    println!(
        "    curl -X POST -H \"Authorization: Bearer $TETHER_KEY\" {server}/v1/pairing/{code}/approve"
    );
    println!();
    println!(
        "This machine: {} ({}/{}), key fingerprint {}.",
        request.name,
        request.os,
        request.arch,
        identity.fingerprint()
    );
    if request.agents.is_empty() {
        println!("Agent CLIs found: none.");
    } else {
        let list: Vec<String> = request
            .agents
            .iter()
            .map(|a| format!("{} {}", a.name, a.version))
            .collect();
        println!("Agent CLIs found: {}.", list.join(", "));
    }
    println!(
        "The code expires at {}. Waiting for approval (Ctrl-C to stop)...",
        started.expires_at
    );

    let outcome = tokio::select! {
        r = pairing::wait_for_approval(&client, &started, pairing::POLL_INTERVAL) => r?,
        _ = tokio::signal::ctrl_c() => {
            bail!("stopped waiting; the code {code} expires on its own");
        }
    };
    match outcome {
        Outcome::Approved { host_id, org_id } => {
            state
                .save_pairing(&Pairing {
                    host_id: host_id.clone(),
                    org_id: org_id.clone(),
                    server: server.clone(),
                })
                .await?;
            println!();
            println!("Paired: this machine is host {host_id} in org {org_id}.");
            println!(
                "Start the daemon with `tether up`, or run it as a service with `tether service install`."
            );
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Expired => {
            bail!(
                "the code {code} expired (or was already used) before it was approved; run `tether pair` again"
            )
        }
        Outcome::Refused { status } => bail!("the server ended the pairing: {status}"),
    }
}
