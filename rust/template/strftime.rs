//! `strftime_now(format)` for templates that print today's date (Llama 3.2 and later): local
//! time, as transformers' `datetime.now()`, or the day `--date` pins for reproducible runs
//! (formatted at 00:00:00). The common `%` directives only.

use std::time::{SystemTime, UNIX_EPOCH};

const MONTHS: [&str; 12] = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
const DAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

pub fn format_utc(format: &str, unix_seconds: i64) -> String {
    let days = unix_seconds.div_euclid(86_400);
    let secs = unix_seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let (hour, minute, second) = (secs / 3600, secs / 60 % 60, secs % 60);
    let month_name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year % 100)),
            Some('b') => out.push_str(&month_name[..3]),
            Some('B') => out.push_str(month_name),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('H') => out.push_str(&format!("{hour:02}")),
            Some('M') => out.push_str(&format!("{minute:02}")),
            Some('S') => out.push_str(&format!("{second:02}")),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Now, in the machine's local time zone.
pub fn now_local(format: &str) -> String {
    let seconds = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    format_utc(format, seconds + local_offset_seconds(seconds))
}

/// Seconds east of UTC of the local time zone at `unix_seconds` (0 where it cannot be known).
#[cfg(unix)]
fn local_offset_seconds(unix_seconds: i64) -> i64 {
    let time = unix_seconds as libc::time_t;
    // SAFETY: `localtime_r` writes only into the `tm` we own; both pointers are valid.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let result = unsafe { libc::localtime_r(&time, &mut tm) };
    if result.is_null() {
        0
    } else {
        tm.tm_gmtoff
    }
}

#[cfg(not(unix))]
fn local_offset_seconds(_unix_seconds: i64) -> i64 {
    0
}

/// `YYYY-MM-DD` → seconds since the epoch at 00:00:00 of that day.
pub fn parse_date(date: &str) -> Option<i64> {
    let mut fields = date.split('-');
    let (year, month, day) = (fields.next()?.parse::<i64>().ok()?, fields.next()?.parse::<u32>().ok()?, fields.next()?.parse::<u32>().ok()?);
    if fields.next().is_some() || !(1..=12).contains(&month) || day == 0 || date.len() != 10 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    // Round-trip rejects days past the month's end (2023-02-30).
    (civil_from_days(days) == (year, month, day)).then_some(days * 86_400)
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_known_dates() {
        // 2024-07-26 00:00:00 UTC was a Friday.
        assert_eq!(super::format_utc("%d %b %Y %A %H:%M", 1_721_952_000), "26 Jul 2024 Friday 00:00");
        assert_eq!(super::format_utc("%Y-%m-%d", 951_782_400), "2000-02-29");
    }

    #[test]
    fn pinned_dates_parse_exactly() {
        assert_eq!(super::parse_date("2024-07-26"), Some(1_721_952_000));
        assert_eq!(super::parse_date("2000-02-29"), Some(951_782_400));
        for bad in ["2023-02-29", "2024-13-01", "2024-7-26", "26 Jul 2024", "2024-07-26-01"] {
            assert_eq!(super::parse_date(bad), None, "{bad}");
        }
    }
}
