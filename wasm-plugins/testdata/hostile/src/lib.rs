//! `hostile`: a guardrail policy that misbehaves as its config says, so the daemon's sandbox
//! can be tested against it. Config `{"behavior": ...}`:
//! - `loop`: never returns (the CPU deadline must stop it);
//! - `grow`: allocates without end (the memory cap must stop it);
//! - `huge`: denies with a 1 MiB reason (over the host's answer cap, under the memory cap);
//! - `trap`: panics (an `unreachable` trap);
//! - anything else: allows.
//!
//! With the `wasi` feature and built for wasm32-wasip2 it also reads the clock, which makes the
//! component import WASI: the host must refuse to load it.

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code, clippy::too_many_arguments)]
mod component {
    wit_bindgen::generate!({ path: "../../wit", world: "policy" });

    use tether::guardrail::host::config;
    use tether::guardrail::types::Decision;

    struct Hostile;

    fn behavior() -> String {
        let config = config();
        ["loop", "grow", "huge", "trap"]
            .into_iter()
            .find(|b| config.contains(&format!("\"{b}\"")))
            .unwrap_or("allow")
            .to_owned()
    }

    impl Guest for Hostile {
        fn name() -> String {
            #[cfg(feature = "wasi")]
            let _ = std::time::SystemTime::now();
            "hostile".to_owned()
        }

        fn events() -> Vec<EventKind> {
            Vec::new()
        }

        fn evaluate(_event: Event) -> Outcome {
            let verdict = match behavior().as_str() {
                "loop" => {
                    let mut n: u64 = 0;
                    loop {
                        n = std::hint::black_box(n.wrapping_add(1));
                    }
                }
                "grow" => {
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        hoard.push(vec![1u8; 1 << 20]);
                        std::hint::black_box(&hoard);
                    }
                }
                "huge" => Decision::Deny("x".repeat(1 << 20)),
                #[allow(clippy::panic)]
                "trap" => panic!("hostile: trapping on purpose"),
                _ => Decision::Allow,
            };
            Outcome {
                verdict,
                context: None,
            }
        }
    }

    export!(Hostile);
}
