//! RFC 3339 times as milliseconds since 1970 (UTC), both ways: what a
//! declaration writes (`2027-01-31T19:00:00+01:00`) and what the servers
//! keep (Synapse and Dendrite milliseconds, MAS RFC 3339).

/// Milliseconds since 1970 of an RFC 3339 time with its offset (`Z` or
/// `±HH:MM`), a fraction of a second cut to milliseconds; `None` for
/// anything else (a date alone, no offset, a field out of range).
pub fn parse_millis(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let separators_ok = bytes.get(4) == Some(&b'-')
        && bytes.get(7) == Some(&b'-')
        && matches!(bytes.get(10), Some(b'T' | b't' | b' '))
        && bytes.get(13) == Some(&b':')
        && bytes.get(16) == Some(&b':');
    if !separators_ok {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let length = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if length == 0 {
            return None;
        }
        let first_three = format!("{:0<3}", &fraction[..length.min(3)]);
        millis = first_three.parse::<i64>().ok()?;
        rest = &fraction[length..];
    }
    let offset_minutes = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            let (hours, minutes) = (digits_of(&rest[1..3])?, digits_of(&rest[4..6])?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            sign * (hours * 60 + minutes)
        }
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_minutes * 60;
    Some(seconds * 1000 + millis)
}

/// Now, in milliseconds since 1970.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `millis` since 1970 as RFC 3339 in UTC, with milliseconds only when
/// there are some (`2027-01-31T18:00:00Z`, `2027-01-31T18:00:00.250Z`).
pub fn format_millis(millis: i64) -> String {
    let (seconds, fraction) = (millis.div_euclid(1000), millis.rem_euclid(1000));
    let (days, of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    let time = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    );
    match fraction {
        0 => format!("{time}Z"),
        _ => format!("{time}.{fraction:03}Z"),
    }
}

fn digits_of(text: &str) -> Option<i64> {
    text.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| text.parse().ok())?
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Howard Hinnant's days_from_civil: days since 1970-01-01.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_with_any_offset_count_from_1970_in_milliseconds() {
        assert_eq!(parse_millis("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_millis("2022-01-16T13:00:00Z"),
            Some(1_642_338_000_000)
        );
        assert_eq!(
            parse_millis("2022-01-16T14:00:00+01:00"),
            Some(1_642_338_000_000)
        );
        assert_eq!(
            parse_millis("2022-01-16T08:30:00-04:30"),
            Some(1_642_338_000_000)
        );
        assert_eq!(
            parse_millis("2024-02-29T23:59:59.1239Z"),
            Some(1_709_251_199_123)
        );
        assert_eq!(
            parse_millis("2024-02-29T23:59:59.5z"),
            Some(1_709_251_199_500)
        );
    }

    #[test]
    fn anything_but_a_whole_rfc3339_time_is_refused() {
        for text in [
            "2022-01-16",
            "2022-01-16T13:00:00",
            "2022-01-16T13:00Z",
            "2023-02-29T00:00:00Z",
            "2022-13-01T00:00:00Z",
            "2022-01-16T24:00:00Z",
            "2022-01-16T13:00:00.Z",
            "2022-01-16T13:00:00+0100",
            "+2022-01-16T13:00:00Z",
            "tomorrow",
            "",
        ] {
            assert_eq!(parse_millis(text), None, "{text}");
        }
    }

    #[test]
    fn formatting_is_the_inverse_in_utc() {
        for text in [
            "1970-01-01T00:00:00Z",
            "2024-02-29T23:59:59.123Z",
            "2099-12-31T00:00:00Z",
            "1969-12-31T23:59:59.999Z",
        ] {
            assert_eq!(format_millis(parse_millis(text).unwrap()), text);
        }
    }
}
