//! Billing periods: the UTC calendar month (`YYYY-MM`) the usage ledger aggregates by and the
//! budget feed counts in, and the labels of its days. Pure, no I/O.

use time::{Date, Month, OffsetDateTime, UtcOffset};

/// A UTC calendar month, `YYYY-MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    pub year: i32,
    pub month: Month,
}

impl Period {
    /// The month `at` falls in (UTC).
    pub fn of(at: OffsetDateTime) -> Period {
        let at = at.to_offset(UtcOffset::UTC);
        Period {
            year: at.year(),
            month: at.month(),
        }
    }

    pub fn current() -> Period {
        Period::of(OffsetDateTime::now_utc())
    }

    /// Parses `YYYY-MM` (years 2000 to 9999).
    pub fn parse(text: &str) -> Result<Period, String> {
        let bad = || format!("{text:?} is not a month as YYYY-MM (for example 2026-11)");
        let (y, m) = text.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 || !y.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let year: i32 = y.parse().map_err(|_| bad())?;
        let month: u8 = m.parse().map_err(|_| bad())?;
        let month = Month::try_from(month).map_err(|_| bad())?;
        if year < 2000 {
            return Err(bad());
        }
        Ok(Period { year, month })
    }

    pub fn label(self) -> String {
        format!("{:04}-{:02}", self.year, u8::from(self.month))
    }

    pub fn first_day(self) -> Date {
        Date::from_calendar_date(self.year, self.month, 1).expect("the first of a month exists")
    }

    pub fn last_day(self) -> Date {
        let days = time::util::days_in_month(self.month, self.year);
        Date::from_calendar_date(self.year, self.month, days).expect("the last of a month exists")
    }
}

/// `YYYY-MM-DD`.
pub fn day_label(date: Date) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}
