#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod words;

use chrono::{Duration, NaiveDate, NaiveDateTime};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use words::*;

/// Orders at scale factor 1.
pub const ORDERS_PER_SF: f64 = 1_000_000.0;
const CHUNK_ORDERS: u64 = 20_000;

/// Errors of the generator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GenError {
    /// Writing an output file failed.
    #[error("cannot write `{path}`")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is invalid.
    #[error("invalid generator setting `{key}`: {reason}")]
    Config {
        /// The key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// What to generate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct GeneratorConfig {
    /// Scale factor: 1.0 is about 1M orders (0.6 GB of NDJSON).
    pub scale_factor: f64,
    /// The seed: the same seed and scale give byte-identical files.
    pub seed: u64,
    /// The share of orders that carry one kind of dirt (0.0 to 0.5).
    pub dirt_rate: f64,
    /// The first order day.
    pub start_date: NaiveDate,
    /// Days the orders span.
    pub days: u32,
    /// Threads generating (the output does not depend on it).
    pub threads: usize,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            scale_factor: 0.01,
            seed: 42,
            dirt_rate: 0.01,
            start_date: NaiveDate::from_ymd_opt(2024, 1, 1).expect("valid date"),
            days: 90,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

impl GeneratorConfig {
    /// The default config at `scale_factor`.
    pub fn at_scale(scale_factor: f64) -> Self {
        Self {
            scale_factor,
            ..Self::default()
        }
    }

    /// With this seed.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// With this dirt rate.
    #[must_use]
    pub fn with_dirt_rate(mut self, rate: f64) -> Self {
        self.dirt_rate = rate;
        self
    }

    fn orders(&self) -> u64 {
        ((self.scale_factor * ORDERS_PER_SF).round() as u64).max(1)
    }
    fn customers(&self) -> u64 {
        (self.orders() / 10).max(10)
    }
    fn partners(&self) -> u64 {
        (self.orders() / 1000).clamp(5, 5000)
    }
    fn products(&self) -> u64 {
        (self.orders() / 100).max(50)
    }

    /// Check the settings.
    ///
    /// # Errors
    /// [`GenError::Config`] naming the key.
    pub fn validate(&self) -> Result<(), GenError> {
        if !(self.scale_factor > 0.0 && self.scale_factor <= 100.0) {
            return Err(GenError::Config {
                key: "scale_factor",
                reason: format!("must be in (0, 100], got {}", self.scale_factor),
            });
        }
        if !(0.0..=0.5).contains(&self.dirt_rate) {
            return Err(GenError::Config {
                key: "dirt_rate",
                reason: format!("must be in [0, 0.5], got {}", self.dirt_rate),
            });
        }
        if self.days == 0 {
            return Err(GenError::Config {
                key: "days",
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

/// Counts of each kind of dirt written into `orders.ndjson`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirtCounts {
    /// Lines that are not valid JSON (truncated records).
    pub malformed_json_lines: u64,
    /// Extra versions of an order, later in the file, with a later `updated_at`.
    pub duplicate_records: u64,
    /// Records whose required `customer_id` is null.
    pub null_customer_id: u64,
    /// Records with a negative line quantity.
    pub negative_quantity: u64,
    /// Records with a currency outside ISO 4217.
    pub unknown_currency: u64,
    /// Records created days before their neighbours (late arrivals).
    pub late_records: u64,
    /// Records whose `total_amount` is an object `{value, currency}` instead of a number (type drift).
    pub type_drift_total_amount: u64,
    /// Records carrying the field `coupon_code`, which appears only in the last fifth of the data (when `dirt_rate` > 0).
    pub new_field_coupon_code: u64,
}

/// Exact totals over the valid, deduplicated orders: what gold must reproduce.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedTotals {
    /// Distinct valid orders (the latest version of each).
    pub orders: u64,
    /// Their order lines.
    pub order_lines: u64,
    /// Units over those lines.
    pub units: u64,
    /// Revenue (sum of `total_amount`) in cents, by currency.
    pub revenue_cents_by_currency: BTreeMap<String, i64>,
    /// Valid orders by status (latest version).
    pub orders_by_status: BTreeMap<String, u64>,
}

/// What was generated, with exact counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The config used.
    pub scale_factor: f64,
    /// The seed used.
    pub seed: u64,
    /// The dirt rate used.
    pub dirt_rate: f64,
    /// Records per entity file (partners, customers, products).
    pub entity_records: BTreeMap<String, u64>,
    /// Distinct orders generated.
    pub orders: u64,
    /// Lines in `orders.ndjson` (records, including duplicates and malformed lines).
    pub order_file_lines: u64,
    /// Lines that decode against the orders schema: all lines but the malformed JSON and the
    /// type-drift ones.
    pub well_formed_order_lines: u64,
    /// 1-based line numbers of the malformed JSON lines (at most 10,000 listed).
    pub malformed_line_numbers: Vec<u64>,
    /// Bytes of `orders.ndjson`.
    pub order_file_bytes: u64,
    /// Dirt written.
    pub dirt: DirtCounts,
    /// Totals a correct pipeline reproduces.
    pub expected: ExpectedTotals,
}

/// The orders schema (column name, Strata type) for explicit-schema pipelines.
pub fn orders_schema() -> Vec<(&'static str, &'static str)> {
    vec![
        ("order_id", "utf8"),
        ("partner_id", "utf8"),
        ("customer_id", "utf8"),
        ("status", "utf8"),
        ("channel", "utf8"),
        ("currency", "utf8"),
        ("created_at", "timestamp"),
        ("updated_at", "timestamp"),
        (
            "shipping_address",
            "struct<street: utf8, postal_code: utf8, city: utf8, country: utf8>",
        ),
        (
            "lines",
            "list<struct<line_no: int32, product_id: utf8, quantity: int32, unit_price: decimal(12,2), discount: decimal(12,2)>>",
        ),
        ("total_amount", "decimal(14,2)"),
        ("coupon_code", "utf8"),
    ]
}

fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", cents.abs() / 100, cents.abs() % 100)
}

fn rng_for(seed: u64, stream: u64, index: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    r.set_stream(index);
    r
}

fn ts(t: NaiveDateTime, offset_h: i32) -> String {
    let local = t + Duration::hours(i64::from(offset_h));
    let sign = if offset_h < 0 { '-' } else { '+' };
    format!(
        "{}{sign}{:02}:00",
        local.format("%Y-%m-%dT%H:%M:%S"),
        offset_h.abs()
    )
}

fn luhn_card(rng: &mut ChaCha8Rng) -> String {
    let mut digits: Vec<u32> = vec![4];
    digits.extend((0..14).map(|_| rng.random_range(0..10)));
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                *d
            }
        })
        .sum();
    digits.push((10 - sum % 10) % 10);
    digits
        .iter()
        .map(|d| char::from_digit(*d, 10).unwrap_or('0'))
        .collect()
}

/// True when `number` passes the Luhn check.
pub fn luhn_valid(number: &str) -> bool {
    let digits: Vec<u32> = number.chars().filter_map(|c| c.to_digit(10)).collect();
    if digits.len() < 12 {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                *d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn place(
    i: u64,
) -> &'static (
    &'static str,
    &'static str,
    &'static str,
    i32,
    &'static str,
    usize,
) {
    &PLACES[(i % PLACES.len() as u64) as usize]
}

fn pick<'a>(rng: &mut ChaCha8Rng, xs: &'a [&'a str]) -> &'a str {
    xs[rng.random_range(0..xs.len())]
}

fn postal(rng: &mut ChaCha8Rng, digits: usize) -> String {
    (0..digits)
        .map(|_| char::from_digit(rng.random_range(0..10), 10).unwrap_or('0'))
        .collect()
}

fn product_price_cents(seed: u64, product: u64) -> i64 {
    let mut r = rng_for(seed, 3, product);
    r.random_range(199..=49_999)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dirt {
    None,
    Malformed,
    Duplicate,
    NullCustomer,
    NegativeQty,
    UnknownCurrency,
    Late,
    TypeDrift,
}

struct ChunkOut {
    text: String,
    lines: u64,
    malformed_at: Vec<u64>, // line index within chunk (0-based)
    dirt: DirtCounts,
    expected: ExpectedTotals,
}

fn gen_orders_chunk(cfg: &GeneratorConfig, chunk: u64) -> ChunkOut {
    let n = cfg.orders();
    let (lo, hi) = (chunk * CHUNK_ORDERS, ((chunk + 1) * CHUNK_ORDERS).min(n));
    let mut rng = rng_for(cfg.seed, 4, chunk);
    let mut out = ChunkOut {
        text: String::with_capacity(((hi - lo) * 700) as usize),
        lines: 0,
        malformed_at: Vec::new(),
        dirt: DirtCounts::default(),
        expected: ExpectedTotals::default(),
    };
    let start = cfg.start_date.and_hms_opt(0, 0, 0).expect("midnight");
    let span_secs = i64::from(cfg.days) * 86_400;
    let partners = cfg.partners();
    let products = cfg.products();
    let mut line = String::with_capacity(1024);
    for i in lo..hi {
        let dirt = if rng.random::<f64>() < cfg.dirt_rate {
            match rng.random_range(0..7) {
                0 => Dirt::Malformed,
                1 => Dirt::Duplicate,
                2 => Dirt::NullCustomer,
                3 => Dirt::NegativeQty,
                4 => Dirt::UnknownCurrency,
                5 => Dirt::Late,
                _ => Dirt::TypeDrift,
            }
        } else {
            Dirt::None
        };
        let customer = rng.random_range(0..cfg.customers());
        let partner = rng.random_range(0..partners);
        let &(_, _, currency, _, _, _) = place(partner);
        let &(country, city, _, offset, _, pdigits) = place(customer);
        let mut secs = (i as i64 * span_secs) / n as i64 + rng.random_range(0..3600);
        if dirt == Dirt::Late {
            secs -= 86_400 * rng.random_range(3..15);
        }
        let created = start + Duration::seconds(secs);
        let updated = created + Duration::minutes(rng.random_range(0..600));
        let status = STATUSES[[0, 1, 2, 3, 3, 3, 3, 4, 5][rng.random_range(0..9)]];
        let channel = pick(&mut rng, CHANNELS);
        let currency = if dirt == Dirt::UnknownCurrency {
            pick(&mut rng, UNKNOWN_CURRENCIES)
        } else {
            currency
        };
        let n_lines = rng.random_range(1..=5u32);
        let mut lines_json = String::with_capacity(128 * n_lines as usize);
        let mut total = 0i64;
        let mut units = 0i64;
        for l in 0..n_lines {
            let product = partner + partners * rng.random_range(0..(products / partners).max(1));
            let price = product_price_cents(cfg.seed, product);
            let mut qty = rng.random_range(1..=5i64);
            if dirt == Dirt::NegativeQty && l == 0 {
                qty = -qty;
            }
            let gross = qty * price;
            let discount = if rng.random_range(0..4) == 0 {
                gross * [5, 10, 15][rng.random_range(0..3)] / 100
            } else {
                0
            };
            total += gross - discount;
            units += qty;
            if l > 0 {
                lines_json.push(',');
            }
            let _ = write!(
                lines_json,
                "{{\"line_no\":{},\"product_id\":\"SKU-{product:07}\",\"quantity\":{qty},\"unit_price\":{},\"discount\":{}}}",
                l + 1,
                money(price),
                money(discount)
            );
        }
        let customer_json = if dirt == Dirt::NullCustomer {
            "null".to_string()
        } else {
            format!("\"C-{customer:07}\"")
        };
        let total_json = if dirt == Dirt::TypeDrift {
            // An upstream API change: the amount becomes an object.
            format!(
                "{{\"value\":\"{}\",\"currency\":\"{currency}\"}}",
                money(total)
            )
        } else {
            money(total)
        };
        let coupon = if cfg.dirt_rate > 0.0 && i * 5 >= n * 4 {
            format!(",\"coupon_code\":\"SAVE{}\"", rng.random_range(5..30))
        } else {
            String::new()
        };
        line.clear();
        let _ = write!(
            line,
            "{{\"order_id\":\"O-{i:09}\",\"partner_id\":\"P-{partner:05}\",\"customer_id\":{customer_json},\"status\":\"{status}\",\"channel\":\"{channel}\",\"currency\":\"{currency}\",\"created_at\":\"{}\",\"updated_at\":\"{}\",\"shipping_address\":{{\"street\":\"{} {}\",\"postal_code\":\"{}\",\"city\":\"{city}\",\"country\":\"{country}\"}},\"lines\":[{lines_json}],\"total_amount\":{total_json}{coupon}}}",
            ts(created, offset),
            ts(updated, offset),
            pick(&mut rng, STREETS),
            rng.random_range(1..200),
            postal(&mut rng, pdigits),
        );
        if !coupon.is_empty() && dirt != Dirt::Malformed {
            out.dirt.new_field_coupon_code += 1;
        }
        match dirt {
            Dirt::Malformed => {
                let cut = line.len() / 2;
                out.text.push_str(&line[..cut]);
                out.text.push('\n');
                out.malformed_at.push(out.lines);
                out.lines += 1;
                out.dirt.malformed_json_lines += 1;
                continue;
            }
            Dirt::NullCustomer => out.dirt.null_customer_id += 1,
            Dirt::NegativeQty => out.dirt.negative_quantity += 1,
            Dirt::UnknownCurrency => out.dirt.unknown_currency += 1,
            Dirt::Late => out.dirt.late_records += 1,
            Dirt::TypeDrift => out.dirt.type_drift_total_amount += 1,
            Dirt::None | Dirt::Duplicate => {}
        }
        out.text.push_str(&line);
        out.text.push('\n');
        out.lines += 1;
        let mut final_status = status;
        if dirt == Dirt::Duplicate {
            // A later version: same order, later updated_at, possibly a new status.
            let later = updated + Duration::hours(rng.random_range(1..48));
            final_status = if status == "delivered" {
                "returned"
            } else {
                "delivered"
            };
            let dup = line
                .replacen(
                    &format!("\"updated_at\":\"{}\"", ts(updated, offset)),
                    &format!("\"updated_at\":\"{}\"", ts(later, offset)),
                    1,
                )
                .replacen(
                    &format!("\"status\":\"{status}\""),
                    &format!("\"status\":\"{final_status}\""),
                    1,
                );
            out.text.push_str(&dup);
            out.text.push('\n');
            out.lines += 1;
            out.dirt.duplicate_records += 1;
            if !coupon.is_empty() {
                out.dirt.new_field_coupon_code += 1;
            }
        }
        if matches!(dirt, Dirt::None | Dirt::Duplicate | Dirt::Late) {
            let e = &mut out.expected;
            e.orders += 1;
            e.order_lines += u64::from(n_lines);
            e.units += units as u64;
            *e.revenue_cents_by_currency
                .entry(currency.to_string())
                .or_default() += total;
            *e.orders_by_status
                .entry(final_status.to_string())
                .or_default() += 1;
        }
    }
    out
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> GenError + '_ {
    move |source| GenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_entities(
    cfg: &GeneratorConfig,
    dir: &Path,
    manifest: &mut Manifest,
) -> Result<(), GenError> {
    let start = cfg.start_date.and_hms_opt(9, 0, 0).expect("time");
    // Partners.
    let path = dir.join("partners.ndjson");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&path).map_err(io_err(&path))?);
    for p in 0..cfg.partners() {
        let mut r = rng_for(cfg.seed, 1, p);
        let &(country, city, currency, offset, phone, _) = place(p);
        let name = format!(
            "{} {} {}",
            pick(&mut r, ADJECTIVES),
            pick(&mut r, LAST_NAMES),
            pick(&mut r, PARTNER_SUFFIXES)
        );
        let iban = format!(
            "{country}{:02}{:018}",
            r.random_range(10..99),
            r.random_range(0..1_000_000_000_000_000_000u64)
        );
        writeln!(
            w,
            "{{\"partner_id\":\"P-{p:05}\",\"name\":\"{name}\",\"country\":\"{country}\",\"city\":\"{city}\",\"currency\":\"{currency}\",\"contact_email\":\"partners+{p}@{}\",\"contact_phone\":\"{phone} {}\",\"iban\":\"{iban}\",\"onboarded_at\":\"{}\"}}",
            pick(&mut r, EMAIL_DOMAINS),
            r.random_range(100_000_000..999_999_999u64),
            ts(start - Duration::days(r.random_range(30..900)), offset)
        )
        .map_err(io_err(&path))?;
    }
    w.flush().map_err(io_err(&path))?;
    manifest
        .entity_records
        .insert("partners".into(), cfg.partners());
    // Customers, with PII.
    let path = dir.join("customers.ndjson");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&path).map_err(io_err(&path))?);
    for c in 0..cfg.customers() {
        let mut r = rng_for(cfg.seed, 2, c);
        let &(country, city, _, offset, phone, pdigits) = place(c);
        let (first, last) = (pick(&mut r, FIRST_NAMES), pick(&mut r, LAST_NAMES));
        let email = format!(
            "{}.{}{}@{}",
            first.to_lowercase(),
            last.to_lowercase().replace(' ', ""),
            c,
            pick(&mut r, EMAIL_DOMAINS)
        );
        let birth = NaiveDate::from_ymd_opt(
            r.random_range(1940..2006),
            r.random_range(1..=12),
            r.random_range(1..=28),
        )
        .expect("date");
        let created = start - Duration::days(r.random_range(0..700));
        writeln!(
            w,
            "{{\"customer_id\":\"C-{c:07}\",\"first_name\":\"{first}\",\"last_name\":\"{last}\",\"email\":\"{email}\",\"phone\":\"{phone} {}\",\"birth_date\":\"{birth}\",\"address\":{{\"street\":\"{} {}\",\"postal_code\":\"{}\",\"city\":\"{city}\",\"country\":\"{country}\"}},\"card_number\":\"{}\",\"marketing_opt_in\":{},\"created_at\":\"{}\",\"updated_at\":\"{}\"}}",
            r.random_range(100_000_000..999_999_999u64),
            pick(&mut r, STREETS),
            r.random_range(1..200),
            postal(&mut r, pdigits),
            luhn_card(&mut r),
            r.random_bool(0.4),
            ts(created, offset),
            ts(created + Duration::days(r.random_range(0..60)), offset)
        )
        .map_err(io_err(&path))?;
    }
    w.flush().map_err(io_err(&path))?;
    manifest
        .entity_records
        .insert("customers".into(), cfg.customers());
    // Products.
    let path = dir.join("products.ndjson");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&path).map_err(io_err(&path))?);
    for p in 0..cfg.products() {
        let mut r = rng_for(cfg.seed, 5, p);
        let partner = p % cfg.partners();
        writeln!(
            w,
            "{{\"product_id\":\"SKU-{p:07}\",\"partner_id\":\"P-{partner:05}\",\"name\":\"{} {}\",\"category\":\"{}\",\"price\":{},\"currency\":\"{}\",\"created_at\":\"{}\"}}",
            pick(&mut r, ADJECTIVES),
            pick(&mut r, NOUNS),
            pick(&mut r, CATEGORIES),
            money(product_price_cents(cfg.seed, p)),
            place(partner).2,
            ts(start - Duration::days(r.random_range(0..400)), 0)
        )
        .map_err(io_err(&path))?;
    }
    w.flush().map_err(io_err(&path))?;
    manifest
        .entity_records
        .insert("products".into(), cfg.products());
    Ok(())
}

/// Generate `partners.ndjson`, `customers.ndjson`, `products.ndjson`, `orders.ndjson`,
/// `orders.schema.json` (the explicit schema) and `manifest.json` into `dir`. `progress` is called with the orders written so far.
///
/// # Errors
/// [`GenError`] naming the setting or the file.
pub fn generate(
    cfg: &GeneratorConfig,
    dir: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Manifest, GenError> {
    cfg.validate()?;
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut manifest = Manifest {
        scale_factor: cfg.scale_factor,
        seed: cfg.seed,
        dirt_rate: cfg.dirt_rate,
        orders: cfg.orders(),
        ..Manifest::default()
    };
    write_entities(cfg, dir, &mut manifest)?;
    let path = dir.join("orders.ndjson");
    let mut w = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(&path).map_err(io_err(&path))?,
    );
    let chunks = cfg.orders().div_ceil(CHUNK_ORDERS);
    let threads = cfg.threads.max(1) as u64;

    let mut first = 0;
    while first < chunks {
        let group: Vec<u64> = (first..(first + threads).min(chunks)).collect();
        let outs: Vec<ChunkOut> = std::thread::scope(|s| {
            let handles: Vec<_> = group
                .iter()
                .map(|c| s.spawn(move || gen_orders_chunk(cfg, *c)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("generator thread"))
                .collect()
        });
        for o in outs {
            w.write_all(o.text.as_bytes()).map_err(io_err(&path))?;
            for l in &o.malformed_at {
                if manifest.malformed_line_numbers.len() < 10_000 {
                    manifest
                        .malformed_line_numbers
                        .push(manifest.order_file_lines + l + 1);
                }
            }
            manifest.order_file_lines += o.lines;
            manifest.order_file_bytes += o.text.len() as u64;
            add_dirt(&mut manifest.dirt, &o.dirt);
            add_expected(&mut manifest.expected, &o.expected);
        }
        first += threads;
        let done = (first * CHUNK_ORDERS).min(cfg.orders());
        progress(done);
    }
    w.flush().map_err(io_err(&path))?;
    manifest.well_formed_order_lines = manifest.order_file_lines
        - manifest.dirt.malformed_json_lines
        - manifest.dirt.type_drift_total_amount;
    let spath = dir.join("orders.schema.json");
    let schema: Vec<serde_json::Value> = orders_schema()
        .into_iter()
        .map(|(n, t)| serde_json::json!({"name": n, "type": t}))
        .collect();
    let body = serde_json::to_vec_pretty(&schema).map_err(|e| GenError::Io {
        path: spath.clone(),
        source: e.into(),
    })?;
    std::fs::write(&spath, body).map_err(io_err(&spath))?;
    let mpath = dir.join("manifest.json");
    let body = serde_json::to_vec_pretty(&manifest).map_err(|e| GenError::Io {
        path: mpath.clone(),
        source: e.into(),
    })?;
    std::fs::write(&mpath, body).map_err(io_err(&mpath))?;
    Ok(manifest)
}

fn add_dirt(a: &mut DirtCounts, b: &DirtCounts) {
    a.malformed_json_lines += b.malformed_json_lines;
    a.duplicate_records += b.duplicate_records;
    a.null_customer_id += b.null_customer_id;
    a.negative_quantity += b.negative_quantity;
    a.unknown_currency += b.unknown_currency;
    a.late_records += b.late_records;
    a.type_drift_total_amount += b.type_drift_total_amount;
    a.new_field_coupon_code += b.new_field_coupon_code;
}

fn add_expected(a: &mut ExpectedTotals, b: &ExpectedTotals) {
    a.orders += b.orders;
    a.order_lines += b.order_lines;
    a.units += b.units;
    for (k, v) in &b.revenue_cents_by_currency {
        *a.revenue_cents_by_currency.entry(k.clone()).or_default() += v;
    }
    for (k, v) in &b.orders_by_status {
        *a.orders_by_status.entry(k.clone()).or_default() += v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_deterministic_and_independent_of_threads() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let cfg = GeneratorConfig {
            threads: 1,
            ..GeneratorConfig::at_scale(0.05).with_dirt_rate(0.05)
        };
        let ma = generate(&cfg, a.path(), &|_| {}).unwrap();
        let mb = generate(
            &GeneratorConfig {
                threads: 3,
                ..cfg.clone()
            },
            b.path(),
            &|_| {},
        )
        .unwrap();
        assert_eq!(ma, mb);
        for f in [
            "orders.ndjson",
            "customers.ndjson",
            "partners.ndjson",
            "products.ndjson",
        ] {
            assert_eq!(
                std::fs::read(a.path().join(f)).unwrap(),
                std::fs::read(b.path().join(f)).unwrap(),
                "{f}"
            );
        }
    }

    #[test]
    fn manifest_counts_match_the_file() {
        let d = tempfile::tempdir().unwrap();
        let m = generate(
            &GeneratorConfig::at_scale(0.03).with_dirt_rate(0.1),
            d.path(),
            &|_| {},
        )
        .unwrap();
        let text = std::fs::read_to_string(d.path().join("orders.ndjson")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len() as u64, m.order_file_lines);
        assert_eq!(text.len() as u64, m.order_file_bytes);
        let bad: Vec<u64> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| serde_json::from_str::<serde_json::Value>(l).is_err())
            .map(|(i, _)| i as u64 + 1)
            .collect();
        assert_eq!(bad, m.malformed_line_numbers);
        assert_eq!(bad.len() as u64, m.dirt.malformed_json_lines);
        let drift = lines
            .iter()
            .filter(|l| l.contains("\"total_amount\":{"))
            .count() as u64;
        assert_eq!(drift, m.dirt.type_drift_total_amount);
        assert!(
            m.dirt.duplicate_records > 0 && m.dirt.negative_quantity > 0 && m.dirt.late_records > 0
        );
        // Expected revenue recomputed from the valid, deduplicated records.
        let mut latest: BTreeMap<String, (String, serde_json::Value)> = BTreeMap::new();
        for l in &lines {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
                continue;
            };
            let id = v["order_id"].as_str().unwrap().to_string();
            let upd = v["updated_at"].as_str().unwrap().to_string();
            if latest.get(&id).is_none_or(|(u, _)| *u < upd) {
                latest.insert(id, (upd, v));
            }
        }
        let mut revenue: BTreeMap<String, i64> = BTreeMap::new();
        let mut orders = 0;
        for (_, v) in latest.values() {
            let cur = v["currency"].as_str().unwrap();
            let valid = !v["customer_id"].is_null()
                && v["total_amount"].is_number()
                && !UNKNOWN_CURRENCIES.contains(&cur)
                && v["lines"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|l| l["quantity"].as_i64().unwrap() > 0);
            if valid {
                orders += 1;
                let cents = (v["total_amount"].as_f64().unwrap() * 100.0).round() as i64;
                *revenue.entry(cur.to_string()).or_default() += cents;
            }
        }
        assert_eq!(orders, m.expected.orders);
        assert_eq!(revenue, m.expected.revenue_cents_by_currency);
    }

    #[test]
    fn cards_pass_luhn() {
        let d = tempfile::tempdir().unwrap();
        generate(&GeneratorConfig::at_scale(0.001), d.path(), &|_| {}).unwrap();
        let text = std::fs::read_to_string(d.path().join("customers.ndjson")).unwrap();
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert!(luhn_valid(v["card_number"].as_str().unwrap()));
            assert!(v["email"].as_str().unwrap().contains('@'));
        }
        assert!(!luhn_valid("4111111111111112"));
    }
}
