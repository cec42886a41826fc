//! List paging: `max_results` 1..1000 (default 1000) and an opaque page token,
//! which is the name of the last item of the previous page (lists are ordered
//! by name).

use super::names::check_name;
use super::validate::Invalid;

/// Largest page.
pub const MAX_PAGE: u32 = 1000;

/// One page of a list request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: u32,
    /// List names after this one.
    pub after: Option<String>,
}

impl PageRequest {
    /// From a request's `max_results` (0 means the default) and `page_token`.
    pub fn new(max_results: i32, page_token: &str) -> Result<Self, Invalid> {
        let limit = match max_results {
            0 => MAX_PAGE,
            n if (1..=MAX_PAGE as i32).contains(&n) => n as u32,
            _ => {
                return Err(Invalid::new("max_results", "must be between 1 and 1000"));
            }
        };
        let after = if page_token.is_empty() {
            None
        } else {
            check_name(page_token).map_err(|_| {
                Invalid::new("page_token", "is not a token from an earlier list response")
            })?;
            Some(page_token.to_string())
        };
        Ok(Self { limit, after })
    }

    /// Everything at once (internal use).
    pub fn all() -> Self {
        Self {
            limit: u32::MAX,
            after: None,
        }
    }
}

/// A page of results and the token of the next page, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` items fetched in name order: the
    /// extra item only says that another page exists.
    pub fn from_overfetch(mut items: Vec<T>, limit: u32, name: impl Fn(&T) -> String) -> Self {
        let limit = limit as usize;
        let next_page_token = if items.len() > limit {
            items.truncate(limit);
            items.last().map(name)
        } else {
            None
        };
        Self {
            items,
            next_page_token,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert_eq!(PageRequest::new(0, "").unwrap().limit, 1000);
        assert_eq!(PageRequest::new(1, "").unwrap().limit, 1);
        assert_eq!(PageRequest::new(1000, "").unwrap().limit, 1000);
        let e = PageRequest::new(1001, "").unwrap_err();
        assert_eq!(e.to_string(), "max_results: must be between 1 and 1000");
        assert!(PageRequest::new(-1, "").is_err());
        assert_eq!(
            PageRequest::new(5, "abc").unwrap().after.as_deref(),
            Some("abc")
        );
        assert_eq!(PageRequest::new(5, "a/b").unwrap_err().field, "page_token");
    }

    #[test]
    fn overfetch() {
        let p = Page::from_overfetch(vec!["a", "b", "c"], 2, |s| s.to_string());
        assert_eq!(p.items, vec!["a", "b"]);
        assert_eq!(p.next_page_token.as_deref(), Some("b"));
        let p = Page::from_overfetch(vec!["a", "b"], 2, |s| s.to_string());
        assert_eq!(p.next_page_token, None);
    }
}
