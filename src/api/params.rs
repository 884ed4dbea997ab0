//! Query and path parameters: one fallible parser per kind of value, so no
//! parameter can panic an operation or be read two ways.
//!
//! - [`DateTime`]: RFC 3339 with any offset, through [`Timestamp::parse`];
//! - [`Day`]: a calendar date `YYYY-MM-DD`, through [`Date::parse`];
//! - [`Number`]: a whole number within the bounds its type names;
//! - [`Flag`]: `true` or `false`;
//! - [`Id`]: 1 to 64 characters from `A-Z a-z 0-9 . _ : ~ -`;
//! - [`Cursor`]: an opaque `next_cursor`, 1 to 256 characters from `A-Z a-z 0-9 . _ ~ -`.
//!
//! A value that does not parse is refused before the operation runs; the
//! edge turns the refusal into a 400 problem that names the parameter and
//! the expected form (see `http::edge`).
use crate::data::Date;
use crate::timestamp::Timestamp;
use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{ParseError, ParseFromParameter, ParseResult, Type};
use std::borrow::Cow;

/// Implements poem-openapi's parameter traits for a newtype from its schema and parser.
macro_rules! parameter {
    ($ty:ident $(<$(const $c:ident: $ct:ty),*>)?, $name:expr, $schema:expr, $parse:expr) => {
        impl$(<$(const $c: $ct),*>)? Type for $ty$(<$($c),*>)? {
            const IS_REQUIRED: bool = true;
            type RawValueType = Self;
            type RawElementValueType = Self;

            fn name() -> Cow<'static, str> {
                $name
            }

            fn schema_ref() -> MetaSchemaRef {
                MetaSchemaRef::Inline(Box::new($schema))
            }

            fn as_raw_value(&self) -> Option<&Self> {
                Some(self)
            }

            fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
                Box::new(std::iter::once(self))
            }
        }

        impl$(<$(const $c: $ct),*>)? ParseFromParameter for $ty$(<$($c),*>)? {
            fn parse_from_parameter(value: &str) -> ParseResult<Self> {
                let parse: fn(&str) -> Result<Self, String> = $parse;
                parse(value).map_err(ParseError::custom)
            }
        }
    };
}

/// An instant, written in RFC 3339 with any offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateTime(pub Timestamp);

parameter!(DateTime, "date-time".into(), MetaSchema::new_with_format("string", "date-time"), |v| Timestamp::parse(v)
    .map(DateTime)
    .map_err(|e| format!("the value {e}; expected RFC 3339 such as 2026-01-31T09:30:00Z")));

/// A calendar date, `YYYY-MM-DD`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Day(pub Date);

parameter!(
    Day,
    "date".into(),
    MetaSchema { pattern: Some(r"^\d{4}-\d{2}-\d{2}$".into()), ..MetaSchema::new_with_format("string", "date") },
    |v| Date::parse(v).map(Day).map_err(|e| format!("the value {e}"))
);

/// A whole number from `MIN` to `MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Number<const MIN: u64, const MAX: u64>(pub u64);

impl<const MIN: u64, const MAX: u64> Number<MIN, MAX> {
    fn parse(value: &str) -> Result<Self, String> {
        let expected = || format!("expected a whole number from {MIN} to {MAX}, written in digits only");
        if value.is_empty() || value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(expected());
        }
        match value.parse::<u64>() {
            Ok(n) if (MIN..=MAX).contains(&n) => Ok(Number(n)),
            _ => Err(expected()),
        }
    }
}

parameter!(
    Number<const MIN: u64, const MAX: u64>,
    format!("integer_{MIN}_{MAX}").into(),
    MetaSchema {
        minimum: Some(MIN as f64),
        maximum: Some(MAX as f64),
        ..MetaSchema::new_with_format("integer", "int64")
    },
    Number::parse
);

/// A page size of a list: 1 to `MAX`.
pub type Limit<const MAX: u64> = Number<1, MAX>;

impl<const MIN: u64, const MAX: u64> Number<MIN, MAX> {
    /// The value, or `default` when the parameter was left out.
    pub fn or(value: Option<Self>, default: u64) -> usize {
        usize::try_from(value.map_or(default, |n| n.0)).unwrap_or(usize::MAX)
    }
}

/// `true` or `false`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flag(pub bool);

parameter!(Flag, "boolean".into(), MetaSchema::new("boolean"), |v| match v {
    "true" => Ok(Flag(true)),
    "false" => Ok(Flag(false)),
    _ => Err("expected `true` or `false`".to_string()),
});

/// The longest id or cursor accepted.
const ID_MAX: usize = 64;
const ID_PATTERN: &str = r"^[A-Za-z0-9._:~-]{1,64}$";

fn identifier(value: &str, what: &str) -> Result<String, String> {
    let fits = (1..=ID_MAX).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'~' | b'-'));
    if fits {
        Ok(value.to_string())
    } else {
        Err(format!("expected {what}: 1 to {ID_MAX} characters from A-Z a-z 0-9 . _ : ~ -"))
    }
}

fn identifier_schema() -> MetaSchema {
    MetaSchema {
        min_length: Some(1),
        max_length: Some(ID_MAX),
        pattern: Some(ID_PATTERN.into()),
        ..MetaSchema::new("string")
    }
}

/// The id of a record or object, as this API or Clio gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Id(pub String);

parameter!(Id, "id".into(), identifier_schema(), |v| identifier(v, "an id").map(Id));

impl std::ops::Deref for Id {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The longest cursor accepted.
const CURSOR_MAX: usize = 256;

/// The `next_cursor` of a previous page (opaque; see `api::page`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor(pub String);

parameter!(
    Cursor,
    "cursor".into(),
    MetaSchema {
        min_length: Some(1),
        max_length: Some(CURSOR_MAX),
        pattern: Some(r"^[A-Za-z0-9._~-]{1,256}$".into()),
        ..MetaSchema::new("string")
    },
    |v| {
        let fits = (1..=CURSOR_MAX).contains(&v.len())
            && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'));
        if fits {
            Ok(Cursor(v.to_string()))
        } else {
            Err("expected the `next_cursor` of the previous page, passed unchanged".to_string())
        }
    }
);

/// A parameter with a closed set of values: an `enum` in the spec, and a
/// refusal that lists the allowed values.
macro_rules! one_of {
    ($(#[$doc:meta])* $ty:ident, $name:expr, [$($value:expr),+ $(,)?]) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct $ty(pub String);

        impl $ty {
            /// Every allowed value.
            pub const VALUES: &'static [&'static str] = &[$($value),+];
        }

        parameter!(
            $ty,
            $name.into(),
            MetaSchema {
                enum_items: $ty::VALUES.iter().map(|v| serde_json::Value::from(*v)).collect(),
                ..MetaSchema::new("string")
            },
            |v| one_of($ty::VALUES, v).map($ty)
        );

        impl From<$ty> for String {
            fn from(p: $ty) -> String {
                p.0
            }
        }
    };
}

/// `value` if it is one of `allowed`, else a refusal naming them all.
fn one_of(allowed: &[&str], value: &str) -> Result<String, String> {
    if allowed.contains(&value) {
        Ok(value.to_string())
    } else {
        let list: Vec<String> = allowed.iter().map(|v| format!("`{v}`")).collect();
        Err(format!("expected one of {}", list.join(", ")))
    }
}

one_of!(
    /// A matter's status.
    MatterStatus, "MatterStatus", ["Open", "Pending", "Closed"]
);
one_of!(
    /// A contact's type.
    ContactType, "ContactType", ["Person", "Company"]
);
one_of!(
    /// An activity's type.
    ActivityType, "ActivityType", ["TimeEntry", "ExpenseEntry", "HardCostEntry", "SoftCostEntry"]
);
one_of!(
    /// A bill's state.
    BillState, "BillState", ["draft", "awaiting_approval", "awaiting_payment", "paid", "void", "deleted"]
);
one_of!(
    /// A task's status.
    TaskStatus, "TaskStatus", ["pending", "in_progress", "in_review", "complete"]
);

macro_rules! unwrap_into {
    ($($ty:ty => $inner:ty),*) => {$(
        impl From<$ty> for $inner {
            fn from(p: $ty) -> $inner {
                p.0
            }
        }
    )*};
}

unwrap_into!(DateTime => Timestamp, Day => Date, Flag => bool, Id => String, Cursor => String);

/// An optional parameter's parsed value.
pub fn opt<P: Into<T>, T>(param: Option<P>) -> Option<T> {
    param.map(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: ParseFromParameter>(v: &str) -> Result<T, String> {
        T::parse_from_parameter(v).map_err(|e| e.into_message())
    }

    #[test]
    fn date_times_of_any_offset_and_range_errors() {
        let t: DateTime = parse("2026-01-31T10:00:00-05:00").unwrap();
        assert_eq!(t.0.to_rfc3339(), "2026-01-31T15:00:00Z");
        for bad in ["9999-12-31T23:59:59-23:59", "0000-01-01T00:00:00+23:59", "", "2026-01-31", "\0", "%ff%fe"] {
            let e = parse::<DateTime>(bad).unwrap_err();
            assert!(e.contains("RFC 3339") || e.contains("range"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn days_are_real_dates() {
        assert_eq!(parse::<Day>("2026-02-28").unwrap().0.to_string(), "2026-02-28");
        for bad in ["0000-00-00", "0000-01-01", "2026-02-30", "2026-1-01", "+2026-01-01", "20260-01-01", "", "x"] {
            assert!(parse::<Day>(bad).unwrap_err().contains("YYYY-MM-DD"), "{bad:?}");
        }
    }

    #[test]
    fn numbers_within_bounds_and_no_overflow() {
        assert_eq!(parse::<Limit<500>>("500").unwrap().0, 500);
        for bad in ["0", "501", "-1", "+5", "1.0", "", "18446744073709551616", "99999999999999999999999", " 5"] {
            assert!(parse::<Limit<500>>(bad).unwrap_err().contains("from 1 to 500"), "{bad:?}");
        }
        assert_eq!(Limit::<500>::or(None, 100), 100);
    }

    #[test]
    fn closed_sets_name_their_values() {
        assert_eq!(parse::<MatterStatus>("Open").unwrap().0, "Open");
        let e = parse::<MatterStatus>("Bogus").unwrap_err();
        assert!(e.ends_with("expected one of `Open`, `Pending`, `Closed`"), "{e}");
        assert!(parse::<BillState>("Paid").is_err(), "values are exact");
    }

    #[test]
    fn flags_ids_and_cursors() {
        assert!(parse::<Flag>("true").unwrap().0);
        assert!(parse::<Flag>("1").is_err());
        assert_eq!(parse::<Id>("usr_1a2b").unwrap().0, "usr_1a2b");
        for bad in ["", "a b", "a/b", "\0", &"x".repeat(65), "é"] {
            assert!(parse::<Id>(bad).is_err(), "{bad:?}");
        }
        for bad in ["", "a b", "a/b", "a:b", "\0", &"x".repeat(257), "é"] {
            assert!(parse::<Cursor>(bad).unwrap_err().contains("`next_cursor`"), "{bad:?}");
        }
    }
}
