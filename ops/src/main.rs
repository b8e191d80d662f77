//! The operators' tool: mini-program codes without a third-party platform (which would need the
//! AppSecret and refresh the token behind the keeper's back). Codes come through the same keeper
//! as the functions: the shared token from the table, a fetch only through the lease.
//!
//! ```sh
//! cargo run --release -p ops -- codes --csv codes.csv --out codes/     # a batch
//! cargo run --release -p ops -- codes --scene id=42 --page pages/index/index --out codes/
//! ```
//!
//! The CSV has `scene,page,width,env_version` per line (a header line is allowed; empty fields
//! take the defaults). Each code is named by its scene (characters a file name cannot hold are
//! %-escaped), written to a temporary file and renamed, so a run stopped halfway (Ctrl-C, an
//! error) loses nothing already written, and a second run skips what is there. Configuration is
//! the functions': `TABLE_NAME`, `WECHAT_*`, AWS credentials (`CODE_BUCKET` for `--to-bucket`,
//! and as the S3 cache).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use wxmp::App;
use wxmp::routes::qrcode::{CodeRequest, make_code};

const USAGE: &str =
    "usage: ops codes (--csv FILE | --scene SCENE [--page PAGE] [--width N] [--env-version V])
                 (--out DIR | --to-bucket) [--parallel N]
  --csv FILE      scene,page,width,env_version per line (header allowed, empty = default)
  --out DIR       write <scene>.png (or .jpg) into DIR; codes already there are skipped
  --to-bucket     write to CODE_BUCKET under operators/<scene>.png instead
  --parallel N    codes made at once (default 4)";

struct Args {
    csv: Option<PathBuf>,
    single: Map<String, Value>,
    out: Option<PathBuf>,
    to_bucket: bool,
    parallel: usize,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    if args.next().as_deref() != Some("codes") {
        return Err("the only command is `codes`".into());
    }
    let mut a = Args {
        csv: None,
        single: Map::new(),
        out: None,
        to_bucket: false,
        parallel: 4,
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--csv" => a.csv = Some(value()?.into()),
            "--out" => a.out = Some(value()?.into()),
            "--to-bucket" => a.to_bucket = true,
            "--parallel" => {
                a.parallel = value()?
                    .parse()
                    .ok()
                    .filter(|n| (1..=64).contains(n))
                    .ok_or("--parallel must be 1 to 64")?
            }
            "--scene" => drop(a.single.insert("scene".into(), value()?.into())),
            "--page" => drop(a.single.insert("page".into(), value()?.into())),
            "--env-version" => drop(a.single.insert("env_version".into(), value()?.into())),
            "--width" => {
                let w: u64 = value()?.parse().map_err(|_| "--width must be a number")?;
                a.single.insert("width".into(), w.into());
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    if a.csv.is_some() == a.single.contains_key("scene") {
        return Err("give either --csv or --scene".into());
    }
    if a.out.is_some() == a.to_bucket {
        return Err("give either --out or --to-bucket".into());
    }
    Ok(a)
}

/// One code to make: where it came from and what it is.
struct Job {
    line: usize,
    scene: String,
    request: CodeRequest,
}

/// A line of the CSV that is refused: its number in the file and why.
type BadLine = (usize, String);

/// The CSV's jobs, and its bad lines, each checked by the route's own rules. A scene given twice
/// is a bad line (both would name one file).
fn read_csv(path: &PathBuf) -> Result<(Vec<Job>, Vec<BadLine>), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // A spreadsheet's "CSV UTF-8" starts with a byte-order mark.
    let text = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&bytes);
    // The line a record starts on, from its byte offset (the csv crate's own line count is off
    // after blank lines and with CRLF endings).
    let line_at = |offset: u64| {
        let mut at = offset as usize;
        while at < text.len() && matches!(text[at], b'\r' | b'\n') {
            at += 1;
        }
        1 + text[..at.min(text.len())]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text);
    let (mut jobs, mut bad) = (Vec::new(), Vec::new());
    let mut scenes: std::collections::HashMap<String, usize> = Default::default();
    let mut first = true;
    let mut record = csv::StringRecord::new();
    loop {
        let line = line_at(reader.position().byte());
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(line, |p| line_at(p.byte()));
                bad.push((line, e.to_string()));
                continue;
            }
        }
        let header = first && record.get(0) == Some("scene");
        first = false;
        if header {
            continue;
        }
        match fields_of(&record).and_then(|fields| job(line, fields)) {
            Ok(j) => {
                // Files are named by scene; a case-insensitive file system folds case.
                match scenes.insert(j.scene.to_lowercase(), line) {
                    Some(earlier) => bad.push((line, format!("the same scene as line {earlier}"))),
                    None => jobs.push(j),
                }
            }
            Err(e) => bad.push((line, e)),
        }
    }
    Ok((jobs, bad))
}

/// A record's fields as the route's JSON (empty fields left out: they take the defaults).
fn fields_of(record: &csv::StringRecord) -> Result<Map<String, Value>, String> {
    if record.len() > 4 {
        return Err(format!(
            "{} fields; expected scene,page,width,env_version",
            record.len()
        ));
    }
    let mut fields = Map::new();
    for (name, value) in ["scene", "page", "width", "env_version"]
        .iter()
        .zip(record.iter())
    {
        if value.is_empty() {
            continue;
        }
        let v = match *name {
            "width" => Value::from(
                value
                    .parse::<u64>()
                    .map_err(|_| format!("width must be a whole number, got {value:?}"))?,
            ),
            _ => Value::from(value),
        };
        fields.insert(name.to_string(), v);
    }
    Ok(fields)
}

fn job(line: usize, fields: Map<String, Value>) -> Result<Job, String> {
    let scene = fields
        .get("scene")
        .and_then(Value::as_str)
        .ok_or("scene is required")?
        .to_string();
    let body = Value::Object(fields).to_string();
    let request =
        wxmp::http::extract::parse::<CodeRequest>(body.as_bytes()).map_err(|e| e.to_string())?;
    Ok(Job {
        line,
        scene,
        request,
    })
}

/// The scene as a file name: letters, digits, `-`, `_`, `.` and `=` kept, every other byte
/// %-escaped (so `a/b?c` and `a_b_c` stay apart).
fn file_stem(scene: &str) -> String {
    let mut out = String::new();
    for b in scene.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'=') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.starts_with('.') {
        out.replace_range(0..1, "%2E");
    }
    out
}

enum Target {
    Dir(PathBuf),
    Bucket { s3: wxmp::aws::S3, bucket: String },
}

impl Target {
    /// True if a code for `stem` is already there (a previous run made it).
    async fn has(&self, stem: &str) -> bool {
        match self {
            Target::Dir(dir) => ["png", "jpg"].iter().any(|ext| {
                std::fs::read(dir.join(format!("{stem}.{ext}")))
                    .is_ok_and(|b| wxmp::wechat::Image::from_bytes(b.into()).is_ok())
            }),
            Target::Bucket { s3, bucket } => {
                for ext in ["png", "jpg"] {
                    let key = format!("operators/{stem}.{ext}");
                    if let Ok(true) = s3.object_exists(bucket, &key).await {
                        return true;
                    }
                }
                false
            }
        }
    }

    async fn write(
        &self,
        stem: &str,
        image: &wxmp::wechat::Image,
        line: usize,
    ) -> Result<(), String> {
        let ext = if image.content_type == "image/jpeg" {
            "jpg"
        } else {
            "png"
        };
        match self {
            Target::Dir(dir) => {
                let part = dir.join(format!(".{stem}.{ext}.{}-{line}.part", std::process::id()));
                let done = dir.join(format!("{stem}.{ext}"));
                tokio::fs::write(&part, &image.bytes)
                    .await
                    .map_err(|e| format!("{}: {e}", part.display()))?;
                tokio::fs::rename(&part, &done)
                    .await
                    .map_err(|e| format!("{}: {e}", done.display()))
            }
            Target::Bucket { s3, bucket } => s3
                .put_object(
                    bucket,
                    &format!("operators/{stem}.{ext}"),
                    image.bytes.clone(),
                    image.content_type,
                    "no-cache",
                )
                .await
                .map_err(|e| e.to_string()),
        }
    }
}

/// A job whose task died counts as failed (its line is unknown then).
fn panicked(e: tokio::task::JoinError) -> (usize, String, Outcome) {
    (
        0,
        "?".into(),
        Outcome::Failed(format!("the task failed: {e}")),
    )
}

enum Outcome {
    Made { from_cache: bool },
    Present,
    Failed(String),
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    if std::env::var_os("RUST_LOG").is_none() {
        // SAFETY: single-threaded here, before anything else reads the environment.
        unsafe { std::env::set_var("RUST_LOG", "warn") };
    }
    wxmp::logging::init();
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ops: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ops: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<ExitCode, String> {
    let (jobs, bad) = match &args.csv {
        Some(path) => read_csv(path)?,
        None => {
            let one = job(0, args.single.clone()).map_err(|e| format!("invalid code: {e}"))?;
            (vec![one], vec![])
        }
    };
    for (line, reason) in &bad {
        eprintln!("line {line}: {reason} (skipped)");
    }
    let app = Arc::new(App::from_env().await.map_err(|e| e.to_string())?);
    let target = Arc::new(match &args.out {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            Target::Dir(dir.clone())
        }
        None => {
            let bucket = app
                .config
                .code_bucket
                .clone()
                .ok_or("--to-bucket needs CODE_BUCKET")?;
            Target::Bucket {
                s3: wxmp::aws::s3(&wxmp::aws::sdk_config().await),
                bucket,
            }
        }
    });

    let started = Instant::now();
    let bar = ProgressBar::new(jobs.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} codes  {msg}  {per_sec}  {eta} left")
            .expect("a valid template"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.store(true, Ordering::SeqCst);
            }
        });
    }
    let slots = Arc::new(Semaphore::new(args.parallel));
    let mut running: JoinSet<(usize, String, Outcome)> = JoinSet::new();
    let mut outcomes: Vec<(usize, String, Outcome)> = Vec::new();
    let mut failed = 0;
    for job in jobs {
        let permit = slots.clone().acquire_owned().await.expect("never closed");
        if stop.load(Ordering::SeqCst) {
            break;
        }
        // Collect what has finished, for the bar.
        while let Some(done) = running.try_join_next() {
            let done = done.unwrap_or_else(panicked);
            failed += matches!(done.2, Outcome::Failed(_)) as usize;
            bar.set_message(format!("{failed} failed"));
            outcomes.push(done);
        }
        let (app, target, bar) = (app.clone(), target.clone(), bar.clone());
        running.spawn(async move {
            let _permit = permit;
            let stem = file_stem(&job.scene);
            let outcome = if target.has(&stem).await {
                Outcome::Present
            } else {
                match make_code(&app, &job.request).await {
                    Ok((image, x_cache)) => match target.write(&stem, &image, job.line).await {
                        Ok(()) => Outcome::Made {
                            from_cache: x_cache == Some("hit"),
                        },
                        Err(e) => Outcome::Failed(format!("not written: {e}")),
                    },
                    Err(e) => Outcome::Failed(format!("{}: {e}", e.code())),
                }
            };
            bar.inc(1);
            (job.line, job.scene, outcome)
        });
    }
    while let Some(done) = running.join_next().await {
        outcomes.push(done.unwrap_or_else(panicked));
    }
    bar.finish_and_clear();

    let (mut made, mut cached, mut present) = (0, 0, 0);
    let mut reasons: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (line, scene, outcome) in &outcomes {
        match outcome {
            Outcome::Made { from_cache } => {
                made += 1;
                cached += *from_cache as usize;
            }
            Outcome::Present => present += 1,
            Outcome::Failed(reason) => {
                reasons
                    .entry(reason.clone())
                    .or_default()
                    .push(if *line > 0 {
                        format!("line {line} ({scene})")
                    } else {
                        scene.clone()
                    })
            }
        }
    }
    let failed: usize = reasons.values().map(Vec::len).sum();
    println!(
        "made {made} ({cached} from the S3 cache), already present {present}, failed {failed}, bad lines {} in {:.1} s",
        bad.len(),
        started.elapsed().as_secs_f64()
    );
    for (reason, which) in &reasons {
        let shown: Vec<_> = which.iter().take(10).cloned().collect();
        let more = which.len().saturating_sub(10);
        println!(
            "  {} failed: {reason}: {}{}",
            which.len(),
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        );
    }
    if stop.load(Ordering::SeqCst) {
        println!("stopped by Ctrl-C: what was made is kept; run again to go on");
        return Ok(ExitCode::from(130));
    }
    Ok(if failed == 0 && bad.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenes_become_distinct_file_names() {
        assert_eq!(file_stem("id=42"), "id=42");
        assert_eq!(file_stem("a/b?c"), "a%2Fb%3Fc");
        assert_ne!(file_stem("a/b"), file_stem("a_b"));
        assert_eq!(file_stem(".hidden"), "%2Ehidden");
    }

    #[test]
    fn csv_lines_are_the_files_lines() {
        let path = std::env::temp_dir().join(format!("ops-csv-{}.csv", std::process::id()));
        std::fs::write(
            &path,
            "\u{feff}scene,page,width,env_version\r\n\r\nid=1,,280,\r\n\"bad one\",,,\r\nid=2,,wide,\r\nID=1,,,\r\nid=3\r\n",
        )
        .unwrap();
        let (jobs, bad) = read_csv(&path).unwrap();
        let lines: Vec<_> = jobs.iter().map(|j| (j.line, j.scene.as_str())).collect();
        assert_eq!(lines, [(3, "id=1"), (7, "id=3")]);
        let bad_lines: Vec<_> = bad.iter().map(|(l, _)| *l).collect();
        assert_eq!(bad_lines, [4, 5, 6], "{bad:?}");
        assert!(bad[2].1.contains("same scene as line 3"), "{bad:?}");
    }

    #[test]
    fn arguments() {
        let a = |s: &str| parse_args(s.split_whitespace().map(String::from));
        assert!(a("codes --csv x.csv --out d").is_ok());
        assert!(a("codes --scene s --width 280 --to-bucket --parallel 8").is_ok());
        assert!(a("codes --csv x.csv --scene s --out d").is_err());
        assert!(a("codes --csv x.csv").is_err());
        assert!(a("codes --scene s --out d --parallel 0").is_err());
        assert!(a("make").is_err());
    }
}
