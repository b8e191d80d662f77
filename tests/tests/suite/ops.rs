//! The operators' tool (`ops codes`), the real binary against moto and the sandbox: a batch with
//! busy answers and a token invalidated mid-run, a second run that finds everything made, bad
//! lines named, and the images exactly the sandbox's for those parameters.

use std::time::Duration;

use e2e::{TestEnv, binary_path};
use wechat_sandbox::{CodeParams, Faults, render_code};

async fn run(
    env: &TestEnv,
    args: &[&str],
    invalidate_after: Option<(&std::path::Path, usize)>,
) -> (bool, String, String) {
    let vars = env.function_env().await;
    let child = tokio::process::Command::new(binary_path("ops"))
        .args(args)
        .env_clear()
        .envs(vars)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ops starts");
    if let Some((dir, after)) = invalidate_after {
        // Every token dies once the run is well under way (as a third party's refresh would do).
        for _ in 0..600 {
            let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
            if n >= after {
                env.sandbox().invalidate_all_tokens();
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let out = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
        .await
        .expect("ops finishes")
        .expect("output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test]
async fn a_batch_of_200_is_all_made_through_busy_answers_and_a_dead_token_then_resumed() {
    let env = TestEnv::new().await;
    let dir = tempdir();
    let csv = dir.join("codes.csv");
    let mut text = String::from("scene,page,width,env_version\n");
    for i in 0..200 {
        text.push_str(&format!("id={i},,280,\n"));
    }
    text.push_str("bad scene!,,280,\n"); // line 202: a space is not a scene character
    text.push_str("ok=1,,wide,\n"); // line 203
    std::fs::write(&csv, text).unwrap();
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    env.sandbox().set_faults(Faults {
        busy_rate: 0.05,
        ..Default::default()
    });

    let args = [
        "codes",
        "--csv",
        csv.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let (ok, stdout, stderr) = run(&env, &args, Some((&out, 60))).await;
    assert!(!ok, "two bad lines make the exit status a failure");
    assert!(
        stdout.contains("made 200 (0 from the S3 cache), already present 0, failed 0, bad lines 2"),
        "{stdout}\n{stderr}"
    );
    assert!(stderr.contains("line 202: scene"), "{stderr}");
    assert!(stderr.contains("line 203: width"), "{stderr}");
    assert!(
        env.sandbox()
            .stats()
            .calls
            .get("/cgi-bin/stable_token")
            .copied()
            .unwrap_or(0)
            >= 2,
        "a new token after the invalidation"
    );

    // Exactly the sandbox's images for those parameters, named by scene; no partial files.
    let names: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 200, "{names:?}");
    for i in [0, 57, 199] {
        let mut p = CodeParams::defaults(&format!("id={i}"));
        p.width = 280;
        assert_eq!(
            std::fs::read(out.join(format!("id={i}.png"))).unwrap(),
            render_code(&p)
        );
    }

    // A second run makes nothing: everything is there.
    env.sandbox().reset_stats();
    let (_, stdout, _) = run(&env, &args, None).await;
    assert!(
        stdout.contains("made 0 (0 from the S3 cache), already present 200"),
        "{stdout}"
    );
    assert_eq!(
        env.sandbox().stats().calls.get("/wxa/getwxacodeunlimit"),
        None
    );
}

#[tokio::test]
async fn one_code_from_flags() {
    let env = TestEnv::new().await;
    let out = tempdir();
    let (ok, stdout, stderr) = run(
        &env,
        &[
            "codes",
            "--scene",
            "a/b?c",
            "--width",
            "300",
            "--out",
            out.to_str().unwrap(),
        ],
        None,
    )
    .await;
    assert!(ok, "{stdout}\n{stderr}");
    let mut p = CodeParams::defaults("a/b?c");
    p.width = 300;
    assert_eq!(
        std::fs::read(out.join("a%2Fb%3Fc.png")).unwrap(),
        render_code(&p)
    );
    let (ok, _, stderr) = run(
        &env,
        &[
            "codes",
            "--scene",
            "no spaces",
            "--out",
            out.to_str().unwrap(),
        ],
        None,
    )
    .await;
    assert!(!ok);
    assert!(stderr.contains("scene"), "{stderr}");
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ops-{}", e2e::moto::unique_name("t")));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test]
async fn ctrl_c_halfway_keeps_what_was_made_and_a_second_run_finishes() {
    let env = TestEnv::new().await;
    let dir = tempdir();
    let csv = dir.join("codes.csv");
    let text: String = (0..120).map(|i| format!("n={i},,280,\n")).collect();
    std::fs::write(&csv, text).unwrap();
    let out = dir.join("out");
    env.sandbox().set_faults(Faults {
        latency_ms: 40,
        ..Default::default()
    });
    let vars = env.function_env().await;
    let child = tokio::process::Command::new(binary_path("ops"))
        .args([
            "codes",
            "--csv",
            csv.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .env_clear()
        .envs(vars)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ops starts");
    for _ in 0..1000 {
        if std::fs::read_dir(&out).map(|d| d.count()).unwrap_or(0) >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = child.id().expect("running").to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let output = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(130), "{stdout}");
    assert!(stdout.contains("stopped by Ctrl-C"), "{stdout}");
    // Every file there is a whole image; none is left half-written.
    let made: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(made.len() < 120, "stopped before the end");
    for p in &made {
        assert!(p.extension().is_some_and(|e| e == "png"), "{}", p.display());
        assert!(std::fs::read(p).unwrap().starts_with(b"\x89PNG"));
    }
    let (ok, stdout, _) = run(
        &env,
        &[
            "codes",
            "--csv",
            csv.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        None,
    )
    .await;
    assert!(ok, "{stdout}");
    assert!(
        stdout.contains(&format!(
            "made {} (0 from the S3 cache), already present {}",
            120 - made.len(),
            made.len()
        )),
        "{stdout}"
    );
}
