//! Named string parameters of the handshake request: the route's path parameters and the
//! query string.

/// Name/value pairs from the request, in the order they appeared, percent-decoded.
///
/// ```
/// use tachyon::handshake::Params;
///
/// let query = Params::from_query("token=abc&tag=a&tag=b&empty=");
/// assert_eq!(query.get("token"), Some("abc"));
/// assert_eq!(query.get_all("tag").collect::<Vec<_>>(), ["a", "b"]);
/// assert_eq!(query.get("empty"), Some(""));
/// assert_eq!(query.get("missing"), None);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Parses an `application/x-www-form-urlencoded` query string (without the `?`).
    pub fn from_query(query: &str) -> Self {
        Self(
            form_urlencoded::parse(query.as_bytes())
                .map(|(name, value)| (name.into_owned(), value.into_owned()))
                .collect(),
        )
    }

    /// The first value named `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    }

    /// Every value named `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.iter()
            .filter(move |(key, _)| *key == name)
            .map(|(_, value)| value)
    }

    /// Whether a value named `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Every name/value pair, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
    }

    /// How many pairs there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(String, String)> for Params {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Self {
        Self(pairs.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded() {
        let query = Params::from_query("name=J%C3%BCrgen+M&x=%2F");
        assert_eq!(query.get("name"), Some("Jürgen M"));
        assert_eq!(query.get("x"), Some("/"));
        assert_eq!(query.len(), 2);
    }

    #[test]
    fn an_empty_query_has_no_params() {
        let query = Params::from_query("");
        assert!(query.is_empty());
        assert!(!query.contains("token"));
    }
}
