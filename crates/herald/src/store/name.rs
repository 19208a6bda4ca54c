//! `StreamName`: `category-id`, where the category is lowercase letters, digits and `_` (it
//! names projections and allocations) and the id any of letters, digits, `_`, `-` and `.`;
//! validated before any SQL.

use std::fmt;
use std::sync::Arc;

use super::StoreError;

/// A validated stream name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamName(Arc<str>);

fn category_ok(c: &str) -> bool {
    !c.is_empty()
        && c.len() <= 64
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl StreamName {
    /// Validates `category-id`.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidName`] naming the value.
    pub fn new(name: &str) -> Result<Self, StoreError> {
        let bad = |reason| StoreError::InvalidName {
            name: name.to_owned(),
            reason,
        };
        let (category, id) = name
            .split_once('-')
            .ok_or_else(|| bad("expected category-id"))?;
        if !category_ok(category) {
            return Err(bad(
                "the category holds lowercase letters, digits and _ only",
            ));
        }
        if id.is_empty()
            || id.len() > 200
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(bad(
                "the id holds letters, digits, _, - and . only (1 to 200)",
            ));
        }
        Ok(StreamName(Arc::from(name)))
    }

    /// Validates a category on its own.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidName`] naming the value.
    pub fn category_name(category: &str) -> Result<&str, StoreError> {
        if category_ok(category) {
            Ok(category)
        } else {
            Err(StoreError::InvalidName {
                name: category.to_owned(),
                reason: "the category holds lowercase letters, digits and _ only",
            })
        }
    }

    /// The whole name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The category.
    pub fn category(&self) -> &str {
        self.0.split('-').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamName({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_category_dash_id_and_everything_else_is_named() {
        let s = StreamName::new("order-42").expect("valid");
        assert_eq!(s.category(), "order");
        assert!(StreamName::new("order-2026-11-23.a_b").is_ok());
        for bad in [
            "order",
            "-x",
            "Order-1",
            "order-",
            "or der-1",
            "o'; drop table x; --",
            "order-a b",
        ] {
            let e = StreamName::new(bad).expect_err(bad).to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }
}
