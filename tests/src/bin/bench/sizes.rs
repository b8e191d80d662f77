//! Sizes. The 8 MB target is for what is deployed, the arm64 `bootstrap` of the cargo lambda
//! build (`scripts/build-lambda.sh --arm64`); the host build's size is shown for information only.

use std::path::Path;

use crate::report::{release_binary, row, target_dir};

fn zipped_size(path: &Path) -> Option<u64> {
    let out = std::process::Command::new("python3")
        .args(["-c", "import io,sys,zipfile\nb=io.BytesIO()\nz=zipfile.ZipFile(b,'w',zipfile.ZIP_DEFLATED)\nz.write(sys.argv[1],'bootstrap')\nz.close()\nprint(len(b.getvalue()))"])
        .arg(path)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn mb(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}

/// The machine a binary is for, read from its ELF header.
fn elf_machine(path: &Path) -> Option<&'static str> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.get(0..4)? != b"\x7fELF" {
        return None;
    }
    match u16::from_le_bytes([*bytes.get(18)?, *bytes.get(19)?]) {
        0x3e => Some("x86_64"),
        0xb7 => Some("arm64"),
        _ => Some("other"),
    }
}

pub fn sizes() {
    println!("\n== sizes (release profile: opt-level s, lto, codegen-units 1, panic abort, strip)");
    let mut arm_built = false;
    for name in ["login", "qrcode", "token-refresher"] {
        let bootstrap = target_dir().join("lambda").join(name).join("bootstrap");
        if let Ok(m) = std::fs::metadata(&bootstrap) {
            let machine = elf_machine(&bootstrap).unwrap_or("unknown");
            // Only the arm64 build is what template.yaml deploys; an x86_64 cargo lambda build
            // (CI's fallback) is shown but not judged.
            let judged = machine == "arm64";
            arm_built |= judged;
            // A bootstrap older than the host build may predate the code measured here.
            let older = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
            let stale = older(&bootstrap) < older(&release_binary(name));
            row(
                &format!(
                    "{name}: bootstrap ({machine}, cargo lambda build{})",
                    if stale { ", older than this build" } else { "" }
                ),
                mb(m.len()),
                if judged { "<= 8 MB" } else { "-" },
                // A stale build is shown, not judged.
                (judged && !stale).then_some(m.len() <= 8_000_000),
            );
            if let Some(z) = zipped_size(&bootstrap) {
                row(
                    &format!("{name}: bootstrap zip ({machine})"),
                    mb(z),
                    "-",
                    None,
                );
            }
        }
        let host = release_binary(name);
        let size = std::fs::metadata(&host).map(|m| m.len()).unwrap_or(0);
        row(
            &format!("{name}: host release binary (not deployed)"),
            mb(size),
            "-",
            None,
        );
    }
    if !arm_built {
        println!(
            "  (no arm64 bootstrap here: `scripts/build-lambda.sh --arm64` builds what is \
             deployed, and this prints its sizes against the 8 MB target)"
        );
    }
}
