//! getwxacodeunlimit: its request rules and the picture the sandbox draws.
//!
//! The picture is not a scannable code. It is a deterministic 1-bit PNG that looks like a QR
//! code (finder squares, timing lines, noisy modules) and whose every byte depends on every
//! parameter, so a test can tell which request made which image.
//!
//! Drawing takes milliseconds (more in a debug build), so the last [`CACHE_SIZE`] distinct
//! parameter sets and their images are remembered, process-wide.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use axum::body::Bytes;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::{self, WxError};

/// Validated parameters of one getwxacodeunlimit call, with WeChat's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeParams {
    pub scene: String,
    pub page: Option<String>,
    /// Already clamped to 280..=1280.
    pub width: u32,
    pub auto_color: bool,
    pub line_color: (u8, u8, u8),
    pub is_hyaline: bool,
    pub env_version: String,
    pub check_path: bool,
}

pub(crate) const MIN_WIDTH: u32 = 280;
pub(crate) const MAX_WIDTH: u32 = 1280;
const DEFAULT_WIDTH: u32 = 430;
const MAX_SCENE_CHARS: usize = 32;
const SCENE_PUNCTUATION: &str = "!#$&'()*+,/:;=?@-._~";
const ENV_VERSIONS: [&str; 3] = ["release", "trial", "develop"];

impl CodeParams {
    /// A call with only `scene` given: every other parameter at WeChat's default.
    pub fn defaults(scene: &str) -> Self {
        CodeParams {
            scene: scene.into(),
            page: None,
            width: DEFAULT_WIDTH,
            auto_color: false,
            line_color: (0, 0, 0),
            is_hyaline: false,
            env_version: "release".into(),
            check_path: true,
        }
    }

    /// Parses a request body the way WeChat does, in the order WeChat reports errors.
    pub(crate) fn from_request(body: &[u8], published_pages: &[String]) -> Result<Self, WxError> {
        let value: Value = serde_json::from_slice(body).map_err(|_| error::INVALID_SCENE_LENGTH)?;
        let obj = value.as_object().ok_or(error::INVALID_SCENE_LENGTH)?;

        let scene = match field(obj, "scene") {
            Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= MAX_SCENE_CHARS => s,
            _ => return Err(error::INVALID_SCENE_LENGTH),
        };
        if !scene
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || SCENE_PUNCTUATION.contains(c))
        {
            return Err(error::INVALID_SCENE);
        }

        let page = match field(obj, "page") {
            None => None,
            Some(Value::String(p)) if p.is_empty() => None,
            Some(Value::String(p)) if p.starts_with('/') || p.contains('?') => {
                return Err(error::INVALID_PAGE);
            }
            Some(Value::String(p)) => Some(p.clone()),
            Some(_) => return Err(error::INVALID_ARGS),
        };

        let check_path = bool_field(obj, "check_path", true)?;
        if check_path
            && page
                .as_ref()
                .is_some_and(|p| !published_pages.iter().any(|published| published == p))
        {
            return Err(error::INVALID_PAGE);
        }

        let env_version = match field(obj, "env_version") {
            None => "release".to_owned(),
            Some(Value::String(v)) if ENV_VERSIONS.contains(&v.as_str()) => v.clone(),
            Some(_) => return Err(error::INVALID_ARGS),
        };

        let width = match field(obj, "width") {
            None => DEFAULT_WIDTH,
            Some(Value::Number(n)) => {
                let w = n.as_f64().ok_or(error::INVALID_ARGS)?;
                // The float-to-int cast saturates; the clamp keeps it in range anyway.
                w.round().clamp(f64::from(MIN_WIDTH), f64::from(MAX_WIDTH)) as u32
            }
            Some(_) => return Err(error::INVALID_ARGS),
        };

        let auto_color = bool_field(obj, "auto_color", false)?;

        let line_color = match field(obj, "line_color") {
            None => (0, 0, 0),
            Some(Value::Object(rgb)) => {
                (channel(rgb, "r")?, channel(rgb, "g")?, channel(rgb, "b")?)
            }
            Some(_) => return Err(error::INVALID_ARGS),
        };

        let is_hyaline = bool_field(obj, "is_hyaline", false)?;

        Ok(Self {
            scene: scene.clone(),
            page,
            width,
            auto_color,
            line_color,
            is_hyaline,
            env_version,
            check_path,
        })
    }

    /// Every parameter, unambiguously: strings are quoted, so no two parameter sets collide.
    fn canonical(&self) -> String {
        let (r, g, b) = self.line_color;
        format!(
            "scene={:?};page={:?};width={};auto_color={};line_color={r},{g},{b};is_hyaline={};env_version={:?};check_path={}",
            self.scene,
            self.page,
            self.width,
            self.auto_color,
            self.is_hyaline,
            self.env_version,
            self.check_path,
        )
    }
}

/// A field, with JSON `null` read as absent.
fn field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn bool_field(obj: &Map<String, Value>, key: &str, default: bool) -> Result<bool, WxError> {
    match field(obj, key) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(error::INVALID_ARGS),
    }
}

fn channel(rgb: &Map<String, Value>, key: &str) -> Result<u8, WxError> {
    match field(rgb, key) {
        None => Ok(0),
        Some(v) => v
            .as_u64()
            .and_then(|n| u8::try_from(n).ok())
            .ok_or(error::INVALID_ARGS),
    }
}

/// Modules per side: the size of a version-5 QR code.
const GRID: usize = 37;
/// Finder square side, plus one module of light separator.
const FINDER: usize = 7;

/// How many distinct parameter sets the render cache remembers.
const CACHE_SIZE: usize = 64;

static CACHE: Mutex<RenderCache> = Mutex::new(RenderCache::new(CACHE_SIZE));

/// Recent renders, most recently used first; the least recently used one goes when full.
struct RenderCache {
    capacity: usize,
    entries: VecDeque<(CodeParams, Bytes)>,
}

impl RenderCache {
    const fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: VecDeque::new(),
        }
    }

    fn get(&mut self, p: &CodeParams) -> Option<Bytes> {
        let i = self.entries.iter().position(|(key, _)| key == p)?;
        let entry = self.entries.remove(i)?;
        let png = entry.1.clone();
        self.entries.push_front(entry);
        Some(png)
    }

    fn insert(&mut self, p: CodeParams, png: Bytes) {
        if self.entries.iter().any(|(key, _)| *key == p) {
            return; // Rendered meanwhile by another caller: same bytes.
        }
        self.entries.push_front((p, png));
        self.entries.truncate(self.capacity);
    }
}

fn cache() -> MutexGuard<'static, RenderCache> {
    CACHE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The code's PNG, from the cache or freshly drawn (outside the cache lock).
pub(crate) fn code_png(p: &CodeParams) -> Bytes {
    if let Some(png) = cache().get(p) {
        return png;
    }
    let png = Bytes::from(draw_code(p));
    cache().insert(p.clone(), png.clone());
    png
}

/// Draws the code for already validated parameters. Same parameters, same bytes; the last 64
/// distinct parameter sets are remembered, so repeating one costs a copy, not a render.
pub fn render_code(p: &CodeParams) -> Vec<u8> {
    code_png(p).to_vec()
}

/// Draws the code, without the cache.
fn draw_code(p: &CodeParams) -> Vec<u8> {
    let canonical = p.canonical();
    let modules = module_grid(&canonical);

    let size = p.width.max(GRID as u32) as usize;
    let scale = size / GRID;
    let margin = (size - scale * GRID) / 2;
    let row_bytes = size.div_ceil(8);

    // Draw one pixel row per module row, then repeat it `scale` times.
    let mut pixels = vec![0u8; row_bytes * size];
    for (my, module_row) in modules.iter().enumerate() {
        let mut row = vec![0u8; row_bytes];
        for (mx, _) in module_row.iter().enumerate().filter(|(_, dark)| **dark) {
            let start = margin + mx * scale;
            for x in start..start + scale {
                row[x / 8] |= 0x80 >> (x % 8);
            }
        }
        let top = margin + my * scale;
        for y in top..top + scale {
            pixels[y * row_bytes..(y + 1) * row_bytes].copy_from_slice(&row);
        }
    }

    let (r, g, b) = if p.auto_color {
        // A dark colour from the parameters, as WeChat picks one from the app's avatar.
        let h = Sha256::digest(format!("auto_color:{canonical}"));
        (h[0] % 128, h[1] % 128, h[2] % 128)
    } else {
        p.line_color
    };
    let palette = vec![255, 255, 255, r, g, b];

    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, size as u32, size as u32);
    encoder.set_color(png::ColorType::Indexed);
    encoder.set_depth(png::BitDepth::One);
    encoder.set_palette(palette);
    if p.is_hyaline {
        encoder.set_trns(vec![0u8, 255]);
    }
    encoder.set_compression(png::Compression::Fast);
    // Writing a well-formed image into memory cannot fail.
    let mut writer = encoder
        .write_header()
        .expect("PNG header for an in-memory image");
    writer
        .write_image_data(&pixels)
        .expect("PNG data for an in-memory image");
    writer.finish().expect("PNG end for an in-memory image");
    out
}

/// The module pattern: three finder squares, timing lines, and the rest from a SHA-256 stream.
fn module_grid(canonical: &str) -> [[bool; GRID]; GRID] {
    let mut bits = BitStream::new(canonical);
    let mut grid = [[false; GRID]; GRID];
    for (y, row) in grid.iter_mut().enumerate() {
        for (x, module) in row.iter_mut().enumerate() {
            *module = match finder_module(x, y) {
                Some(dark) => dark,
                None if y == FINDER - 1 || x == FINDER - 1 => (x + y) % 2 == 0,
                None => bits.next_bit(),
            };
        }
    }
    grid
}

/// `Some(dark)` inside a finder square or the light separator around it, `None` elsewhere.
fn finder_module(x: usize, y: usize) -> Option<bool> {
    const SIDE: isize = FINDER as isize;
    const FAR: isize = (GRID - FINDER) as isize;
    for (ox, oy) in [(0, 0), (FAR, 0), (0, FAR)] {
        let (dx, dy) = (x as isize - ox, y as isize - oy);
        if (-1..=SIDE).contains(&dx) && (-1..=SIDE).contains(&dy) {
            let inside = (0..SIDE).contains(&dx) && (0..SIDE).contains(&dy);
            // Dark outer ring, light ring, dark 3x3 centre.
            let ring = (dx - 3).abs().max((dy - 3).abs());
            return Some(inside && ring != 2);
        }
    }
    None
}

/// Bits of SHA-256(canonical || counter), block after block.
struct BitStream<'a> {
    seed: &'a str,
    counter: u32,
    block: [u8; 32],
    used: usize,
}

impl<'a> BitStream<'a> {
    fn new(seed: &'a str) -> Self {
        Self {
            seed,
            counter: 0,
            block: [0; 32],
            used: 256,
        }
    }

    fn next_bit(&mut self) -> bool {
        if self.used == 256 {
            let mut h = Sha256::new();
            h.update(self.seed.as_bytes());
            h.update(self.counter.to_be_bytes());
            self.block = h.finalize().into();
            self.counter += 1;
            self.used = 0;
        }
        let bit = self.block[self.used / 8] & (0x80 >> (self.used % 8)) != 0;
        self.used += 1;
        bit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> CodeParams {
        CodeParams::defaults("id=42")
    }

    fn decode(bytes: &[u8]) -> (png::OutputInfo, Vec<u8>, Vec<u8>, Option<Vec<u8>>) {
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let info = reader.info();
        let palette = info.palette.as_ref().unwrap().to_vec();
        let trns = info.trns.as_ref().map(|t| t.to_vec());
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let out = reader.next_frame(&mut buf).unwrap();
        (out, buf, palette, trns)
    }

    #[test]
    fn finder_squares_sit_in_three_corners() {
        let g = module_grid("x");
        for (ox, oy) in [(0, 0), (GRID - 7, 0), (0, GRID - 7)] {
            for d in 0..7 {
                assert!(g[oy][ox + d] && g[oy + 6][ox + d], "outer ring row");
                assert!(g[oy + d][ox] && g[oy + d][ox + 6], "outer ring column");
            }
            assert!(!g[oy + 1][ox + 1] && !g[oy + 5][ox + 5], "light ring");
            assert!(g[oy + 3][ox + 3], "centre");
        }
        // Separators are light.
        assert!(!g[7][7] && !g[7][GRID - 8] && !g[GRID - 8][7]);
    }

    #[test]
    fn image_is_a_one_bit_indexed_png_of_the_requested_width() {
        let p = CodeParams {
            line_color: (10, 20, 30),
            ..params()
        };
        let (info, _, palette, trns) = decode(&render_code(&p));
        assert_eq!((info.width, info.height), (430, 430));
        assert_eq!(info.color_type, png::ColorType::Indexed);
        assert_eq!(info.bit_depth, png::BitDepth::One);
        assert_eq!(palette, [255, 255, 255, 10, 20, 30]);
        assert_eq!(trns, None);

        let hyaline = CodeParams {
            is_hyaline: true,
            ..params()
        };
        let (_, _, _, trns) = decode(&render_code(&hyaline));
        assert_eq!(trns.as_deref(), Some(&[0u8, 255][..]));
    }

    #[test]
    fn margins_are_background_and_the_corner_is_foreground() {
        // 1280 = 34 * 37 + 22: an 11-pixel margin on each side.
        let p = CodeParams {
            width: 1280,
            ..params()
        };
        let (info, buf, _, _) = decode(&render_code(&p));
        let pixel = |x: usize, y: usize| buf[y * info.line_size + x / 8] & (0x80 >> (x % 8)) != 0;
        assert!(!pixel(10, 10));
        assert!(pixel(11, 11));
        assert!(!pixel(1269, 1269));
    }

    #[test]
    fn every_parameter_changes_the_bytes() {
        let base = render_code(&params());
        assert_eq!(base, render_code(&params()));
        let variants = [
            CodeParams {
                scene: "id=43".into(),
                ..params()
            },
            CodeParams {
                page: Some("pages/index/index".into()),
                ..params()
            },
            CodeParams {
                width: 431,
                ..params()
            },
            CodeParams {
                auto_color: true,
                ..params()
            },
            CodeParams {
                line_color: (0, 0, 1),
                ..params()
            },
            CodeParams {
                is_hyaline: true,
                ..params()
            },
            CodeParams {
                env_version: "trial".into(),
                ..params()
            },
            CodeParams {
                check_path: false,
                ..params()
            },
        ];
        for v in &variants {
            assert_ne!(render_code(v), base, "{v:?}");
        }
    }

    #[test]
    fn repeated_renders_come_from_the_cache() {
        let p = CodeParams::defaults("cache-test-only");
        let first = code_png(&p);
        let second = code_png(&p);
        assert_eq!(
            first.as_ptr(),
            second.as_ptr(),
            "the same buffer, not a new render"
        );
        assert_eq!(first, draw_code(&p));
        assert_eq!(render_code(&p), draw_code(&p));
    }

    #[test]
    fn render_cache_keeps_the_most_recently_used() {
        let mut cache = RenderCache::new(2);
        let (a, b, c) = (
            params(),
            CodeParams::defaults("b"),
            CodeParams::defaults("c"),
        );
        cache.insert(a.clone(), Bytes::from_static(b"a"));
        cache.insert(b.clone(), Bytes::from_static(b"b"));
        assert_eq!(cache.get(&a).as_deref(), Some(&b"a"[..]));
        cache.insert(c.clone(), Bytes::from_static(b"c"));
        assert_eq!(cache.entries.len(), 2);
        assert!(cache.get(&b).is_none(), "least recently used goes");
        assert_eq!(cache.get(&a).as_deref(), Some(&b"a"[..]));
        assert_eq!(cache.get(&c).as_deref(), Some(&b"c"[..]));
        cache.insert(c.clone(), Bytes::from_static(b"other"));
        assert_eq!(
            cache.get(&c).as_deref(),
            Some(&b"c"[..]),
            "first render kept"
        );
    }

    #[test]
    fn request_defaults_and_clamping() {
        let published = vec!["pages/index/index".to_owned()];
        let p = CodeParams::from_request(br#"{"scene":"id=42"}"#, &published).unwrap();
        assert_eq!(p, params());
        let wide = CodeParams::from_request(br#"{"scene":"a","width":5000}"#, &published).unwrap();
        assert_eq!(wide.width, MAX_WIDTH);
        let narrow = CodeParams::from_request(br#"{"scene":"a","width":1}"#, &published).unwrap();
        assert_eq!(narrow.width, MIN_WIDTH);
    }
}
