//! Durations as Batch AI files spell them: ISO 8601 (`P7D`, `PT2H30M`,
//! `P1DT2H3M4.5S`), .NET TimeSpan (`7.00:00:00`, `1.02:03:04`, `02:00:00`,
//! `00:00:30.5`, a bare day count `7`), and Python's `timedelta` text that az
//! printed (`7 days, 0:00:00`). Rendering uses ISO 8601, as the REST examples do.

use prost_types::Duration;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Parses a duration; the error says what was wrong (the caller adds the field).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    let nanos = if t.starts_with('P') || t.starts_with('p') {
        parse_iso(t)?
    } else if t.contains(" day") {
        parse_timedelta(t)?
    } else {
        parse_timespan(t)?
    };
    to_proto(nanos).ok_or_else(|| format!("duration {text:?} is too long"))
}

/// Renders a duration as ISO 8601 (`P7D`, `PT2H`, `P1DT2H3M4.5S`, `PT0S`).
pub fn format_duration(d: &Duration) -> String {
    if d.seconds < 0 || d.nanos < 0 {
        return format!(
            "-{}",
            format_duration(&Duration {
                seconds: -d.seconds,
                nanos: -d.nanos
            })
        );
    }
    let secs = d.seconds.unsigned_abs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (hours, rem) = (rem / 3600, rem % 3600);
    let (mins, s) = (rem / 60, rem % 60);
    let mut out = String::from("P");
    if days > 0 {
        out.push_str(&format!("{days}D"));
    }
    let frac = d.nanos.unsigned_abs();
    if hours > 0 || mins > 0 || s > 0 || frac > 0 || days == 0 {
        out.push('T');
        if hours > 0 {
            out.push_str(&format!("{hours}H"));
        }
        if mins > 0 {
            out.push_str(&format!("{mins}M"));
        }
        if s > 0 || frac > 0 || (hours == 0 && mins == 0) {
            if frac > 0 {
                let f = format!("{frac:09}");
                out.push_str(&format!("{s}.{}S", f.trim_end_matches('0')));
            } else {
                out.push_str(&format!("{s}S"));
            }
        }
    }
    out
}

fn to_proto(nanos: u128) -> Option<Duration> {
    let secs = i64::try_from(nanos / u128::from(NANOS_PER_SEC)).ok()?;
    let sub = i32::try_from(nanos % u128::from(NANOS_PER_SEC)).ok()?;
    Some(Duration {
        seconds: secs,
        nanos: sub,
    })
}

/// A decimal number with an optional fraction, as nanoseconds of `unit_nanos`.
fn number_nanos(num: &str, unit_nanos: u128, whole: &str) -> Result<u128, String> {
    let bad = || format!("bad duration {whole:?}");
    let (int, frac) = match num.split_once(['.', ',']) {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    if !int.chars().all(|c| c.is_ascii_digit()) || !frac.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let int_v: u128 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| bad())?
    };
    let mut total = int_v.checked_mul(unit_nanos).ok_or_else(bad)?;
    let mut scale = unit_nanos;
    for c in frac.chars().take(18) {
        scale /= 10;
        let digit = u128::from(c.to_digit(10).ok_or_else(bad)?);
        total += digit * scale;
    }
    Ok(total)
}

fn parse_iso(t: &str) -> Result<u128, String> {
    let bad = |why: &str| format!("bad ISO 8601 duration {t:?}: {why}");
    let body = &t[1..];
    let (date, time) = match body.split_once(['T', 't']) {
        Some((d, tm)) => (d, Some(tm)),
        None => (body, None),
    };
    if date.is_empty() && time.is_none_or(str::is_empty) {
        return Err(bad("no components"));
    }
    let mut total: u128 = 0;
    let mut num = String::new();
    for c in date.chars() {
        match c.to_ascii_uppercase() {
            'W' => {
                total += number_nanos(&take(&mut num), 7 * 86_400 * u128::from(NANOS_PER_SEC), t)?
            }
            'D' => total += number_nanos(&take(&mut num), 86_400 * u128::from(NANOS_PER_SEC), t)?,
            'Y' | 'M' => return Err(bad("years and months have no fixed length; use days")),
            c if c.is_ascii_digit() || c == '.' || c == ',' => num.push(c),
            _ => return Err(bad("unexpected character")),
        }
    }
    if !num.is_empty() {
        return Err(bad("a number without a unit"));
    }
    if let Some(time) = time {
        if time.is_empty() {
            return Err(bad("nothing after T"));
        }
        for c in time.chars() {
            match c.to_ascii_uppercase() {
                'H' => total += number_nanos(&take(&mut num), 3600 * u128::from(NANOS_PER_SEC), t)?,
                'M' => total += number_nanos(&take(&mut num), 60 * u128::from(NANOS_PER_SEC), t)?,
                'S' => total += number_nanos(&take(&mut num), u128::from(NANOS_PER_SEC), t)?,
                c if c.is_ascii_digit() || c == '.' || c == ',' => num.push(c),
                _ => return Err(bad("unexpected character")),
            }
        }
        if !num.is_empty() {
            return Err(bad("a number without a unit"));
        }
    }
    Ok(total)
}

fn take(s: &mut String) -> String {
    std::mem::take(s)
}

/// .NET TimeSpan: `[d.]hh:mm[:ss[.fffffff]]` or a bare day count.
fn parse_timespan(t: &str) -> Result<u128, String> {
    let bad = || {
        format!(
            "bad duration {t:?}: expected ISO 8601 (P7D, PT2H) or d.hh:mm:ss (7.00:00:00, 02:00:00)"
        )
    };
    let sec = u128::from(NANOS_PER_SEC);
    if t.chars().all(|c| c.is_ascii_digit()) {
        return number_nanos(t, 86_400 * sec, t);
    }
    let parts: Vec<&str> = t.split(':').collect();
    if parts.len() < 2 || parts.len() > 3 {
        return Err(bad());
    }
    let (days, hours) = match parts[0].split_once('.') {
        Some((d, h)) => (d, h),
        None => ("0", parts[0]),
    };
    let field = |s: &str, max: u128| -> Result<u128, String> {
        if s.is_empty() || !s.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        let v: u128 = s.parse().map_err(|_| bad())?;
        if v > max { Err(bad()) } else { Ok(v) }
    };
    let d = field(days, u128::from(u32::MAX))?;
    let h = field(hours, 23)?;
    let m = field(parts[1], 59)?;
    let s_nanos = match parts.get(2) {
        Some(s) => {
            let whole = s.split(['.', ',']).next().unwrap_or("");
            field(whole, 59)?;
            number_nanos(s, sec, t)?
        }
        None => 0,
    };
    Ok(((d * 24 + h) * 60 + m) * 60 * sec + s_nanos)
}

/// Python timedelta text: `7 days, 0:00:00` or `1 day, 2:03:04.5`.
fn parse_timedelta(t: &str) -> Result<u128, String> {
    let bad = || format!("bad duration {t:?}");
    let (days, rest) = t.split_once(',').ok_or_else(bad)?;
    let days = days
        .trim()
        .trim_end_matches("days")
        .trim_end_matches("day")
        .trim();
    let d = number_nanos(days, 86_400 * u128::from(NANOS_PER_SEC), t)?;
    let rest = rest.trim();
    let padded = if rest.split(':').next().is_some_and(|h| h.len() == 1) {
        format!("0{rest}")
    } else {
        rest.to_string()
    };
    Ok(d + parse_timespan(&padded)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(t: &str) -> (i64, i32) {
        let d = parse_duration(t).unwrap();
        (d.seconds, d.nanos)
    }

    #[test]
    fn iso_8601() {
        assert_eq!(secs("P7D"), (7 * 86_400, 0));
        assert_eq!(secs("PT2H"), (7200, 0));
        assert_eq!(secs("PT2H30M"), (9000, 0));
        assert_eq!(secs("P1DT2H3M4S"), (93_784, 0));
        assert_eq!(secs("PT1.5S"), (1, 500_000_000));
        assert_eq!(secs("P2W"), (14 * 86_400, 0));
        assert!(parse_duration("P1M").is_err(), "months are ambiguous");
        assert!(parse_duration("P").is_err());
        assert!(parse_duration("PT").is_err());
        assert!(parse_duration("P5").is_err());
        assert!(parse_duration("PT5X").is_err());
    }

    #[test]
    fn dotnet_timespan() {
        assert_eq!(secs("7.00:00:00"), (7 * 86_400, 0));
        assert_eq!(secs("1.02:03:04"), (93_784, 0));
        assert_eq!(secs("02:00:00"), (7200, 0));
        assert_eq!(secs("00:30"), (1800, 0));
        assert_eq!(secs("00:00:30.25"), (30, 250_000_000));
        assert_eq!(secs("7"), (7 * 86_400, 0));
        assert!(parse_duration("24:00:00").is_err(), "hours run 0..23");
        assert!(parse_duration("00:60:00").is_err());
        assert!(parse_duration("-01:00:00").is_err());
        assert!(parse_duration("two hours").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn python_timedelta() {
        assert_eq!(secs("7 days, 0:00:00"), (7 * 86_400, 0));
        assert_eq!(secs("1 day, 2:03:04"), (93_784, 0));
    }

    #[test]
    fn renders_iso() {
        let d = |s, n| {
            format_duration(&Duration {
                seconds: s,
                nanos: n,
            })
        };
        assert_eq!(d(7 * 86_400, 0), "P7D");
        assert_eq!(d(7200, 0), "PT2H");
        assert_eq!(d(93_784, 0), "P1DT2H3M4S");
        assert_eq!(d(1, 500_000_000), "PT1.5S");
        assert_eq!(d(0, 0), "PT0S");
        for t in ["P7D", "PT2H30M", "P1DT2H3M4.5S", "PT0S"] {
            assert_eq!(
                format_duration(&parse_duration(t).unwrap()),
                t,
                "round trip"
            );
        }
    }
}
