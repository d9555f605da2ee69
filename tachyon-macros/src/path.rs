//! The route template: `"/ws/{room_id}"` (axum) or `"/ws/<room_id>"` (Python), checked and
//! turned into axum's syntax. Plain strings in and out, no syn types: an error says where in
//! the string it is, as a byte range.

use std::ops::Range;

/// A checked route template.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Template {
    /// The path in axum's syntax (without the query part).
    pub(crate) axum_path: String,
    /// The path parameter names, in order.
    pub(crate) params: Vec<String>,
    /// The query parameter names declared after `?`, in order.
    pub(crate) query: Vec<String>,
    /// Where each parameter is declared in the template (`{name}`, `<name>`...), as byte
    /// ranges: those of `params`, then those of `query`, in order.
    pub(crate) declared_at: Vec<Range<usize>>,
}

impl Template {
    /// Where the parameter `name` (path or query) is declared in the template.
    pub(crate) fn declaration_of(&self, name: &str) -> Option<Range<usize>> {
        let index = self
            .params
            .iter()
            .chain(&self.query)
            .position(|param| param == name)?;
        self.declared_at.get(index).cloned()
    }
}

/// A mistake in a path: what is wrong, and the bytes of the path it is about.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PathError {
    pub(crate) message: String,
    pub(crate) at: Range<usize>,
}

impl PathError {
    fn new(message: String, at: Range<usize>) -> Self {
        Self { message, at }
    }
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Checks `template` (a path, then optionally `?<name>&<name>` or `?{name}&{name}` declaring query
/// parameters) and converts the path to axum's syntax.
pub(crate) fn parse(template: &str) -> Result<Template, PathError> {
    let (path, query) = match template.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (template, None),
    };
    let mut parsed = parse_path(path)?;
    if let Some(query) = query {
        for (name, at) in parse_query(query, path.len() + 1, &parsed.params)? {
            parsed.query.push(name);
            parsed.declared_at.push(at);
        }
    }
    Ok(parsed)
}

/// The declared query parameters and where each is; `start` is where `query` begins in the
/// template.
fn parse_query(
    query: &str,
    start: usize,
    path_params: &[String],
) -> Result<Vec<(String, Range<usize>)>, PathError> {
    let mut declared: Vec<(String, Range<usize>)> = Vec::new();
    let mut offset = start;
    for item in query.split('&') {
        let at = offset..offset + item.len();
        offset = at.end + 1;
        let inner = item
            .strip_prefix('<')
            .and_then(|rest| rest.strip_suffix('>'))
            .or_else(|| {
                item.strip_prefix('{')
                    .and_then(|rest| rest.strip_suffix('}'))
            });
        let Some(name) = inner else {
            let at = if item.is_empty() {
                at.start.saturating_sub(1)..at.start
            } else {
                at
            };
            return Err(PathError::new(
                format!(
                    "`{item}` is not a query parameter declaration: write `?<name>` (or \
                     `?{{name}}`), and `&` between several"
                ),
                at,
            ));
        };
        if let Some(bad) = first_non_identifier(name) {
            let width = name[bad..].chars().next().map_or(1, char::len_utf8);
            let from = at.start + 1 + bad;
            return Err(PathError::new(
                format!(
                    "query parameter `{name}` must be a Rust identifier, to match an argument of \
                     the handler by name"
                ),
                from..from + width,
            ));
        }
        if declared
            .iter()
            .map(|(existing, _)| existing)
            .chain(path_params)
            .any(|existing| existing == name)
        {
            return Err(PathError::new(
                format!("parameter `{name}` is declared twice: give each parameter its own name"),
                at,
            ));
        }
        declared.push((name.to_owned(), at));
    }
    Ok(declared)
}

/// Checks the path part and converts it to axum's syntax.
fn parse_path(path: &str) -> Result<Template, PathError> {
    if !path.starts_with('/') {
        let first = path.chars().next().map_or(0, char::len_utf8);
        return Err(PathError::new(
            format!(
                "a WebSocket path must start with `/`: write \"/{}\"",
                path.trim_start_matches('/')
            ),
            0..first,
        ));
    }
    let segments: Vec<&str> = path[1..].split('/').collect();
    let mut axum_path = String::with_capacity(path.len());
    let mut params: Vec<String> = Vec::new();
    let mut declared_at: Vec<Range<usize>> = Vec::new();
    let mut start = 1;
    for (index, segment) in segments.iter().enumerate() {
        let at = start..start + segment.len();
        start = at.end + 1;
        let last = index + 1 == segments.len();
        axum_path.push('/');
        if segment.is_empty() {
            if last {
                continue; // a trailing slash is part of the route, as in axum
            }
            return Err(PathError::new(
                format!("empty segment (`//`) in path \"{path}\""),
                at.start - 1..at.start + 1,
            ));
        }
        let param = parse_segment(segment).map_err(|(message, within)| {
            PathError::new(message, at.start + within.start..at.start + within.end)
        })?;
        match param {
            None => axum_path.push_str(segment),
            Some(Param { name, catch_all }) => {
                if catch_all && !last {
                    return Err(PathError::new(
                        format!(
                            "the catch-all parameter `{{*{name}}}` must be the last segment of the \
                             path"
                        ),
                        at,
                    ));
                }
                if params.iter().any(|existing| existing == name) {
                    return Err(PathError::new(
                        format!(
                            "path parameter `{name}` appears twice in \"{path}\": give each \
                             parameter its own name"
                        ),
                        at,
                    ));
                }
                axum_path.push('{');
                if catch_all {
                    axum_path.push('*');
                }
                axum_path.push_str(name);
                axum_path.push('}');
                params.push(name.to_owned());
                declared_at.push(at);
            }
        }
    }
    Ok(Template {
        axum_path,
        params,
        query: Vec::new(),
        declared_at,
    })
}

struct Param<'a> {
    name: &'a str,
    catch_all: bool,
}

/// A mistake in a segment, and the bytes of the segment it is about.
type SegmentError = (String, Range<usize>);

/// A segment is a literal, or a whole `{name}` / `{*name}` / `<name>` parameter.
fn parse_segment(segment: &str) -> Result<Option<Param<'_>>, SegmentError> {
    let whole = 0..segment.len();
    if let Some(name) = segment.strip_prefix(':') {
        return Err((
            format!(
                "`{segment}` is the path syntax of axum 0.7 and earlier; axum 0.8 writes \
                 parameters as `{{{name}}}`"
            ),
            whole,
        ));
    }
    if let Some(name) = segment.strip_prefix('*') {
        return Err((
            format!(
                "`{segment}` is the path syntax of axum 0.7 and earlier; write a catch-all \
                 parameter as `{{*{name}}}`"
            ),
            whole,
        ));
    }
    let inner = if let Some(rest) = segment.strip_prefix('{') {
        match rest.strip_suffix('}') {
            Some(inner) => inner,
            None => return Err((unbalanced(segment, '{', '}'), 0..1)),
        }
    } else if let Some(rest) = segment.strip_prefix('<') {
        match rest.strip_suffix('>') {
            Some(inner) => inner,
            None => return Err((unbalanced(segment, '<', '>'), 0..1)),
        }
    } else {
        if let Some((at, bracket)) = segment
            .char_indices()
            .find(|(_, c)| matches!(c, '{' | '}' | '<' | '>'))
        {
            return Err((
                format!(
                    "unexpected `{bracket}` in path segment `{segment}`: a parameter must be a \
                     whole segment, like `/{{name}}`"
                ),
                at..at + 1,
            ));
        }
        return Ok(None);
    };
    let (name, catch_all) = match inner.strip_prefix('*') {
        Some(name) => (name, true),
        None => (inner, false),
    };
    if name.is_empty() {
        return Err((
            format!("path segment `{segment}` has a parameter without a name"),
            whole,
        ));
    }
    if let Some(bad) = first_non_identifier(name) {
        let offset = segment.len() - 1 - name.len();
        let width = name[bad..].chars().next().map_or(1, char::len_utf8);
        return Err((
            format!(
                "path parameter `{name}` must be a Rust identifier, to match an argument of the \
                 handler by name"
            ),
            offset + bad..offset + bad + width,
        ));
    }
    Ok(Some(Param { name, catch_all }))
}

fn unbalanced(segment: &str, open: char, close: char) -> String {
    format!(
        "unbalanced `{open}` in path segment `{segment}`: close the parameter with `{close}` and \
         make it the whole segment"
    )
}

/// Where `name` stops being a Rust identifier, if it does.
fn first_non_identifier(name: &str) -> Option<usize> {
    if name == "_" {
        return Some(0);
    }
    name.char_indices().find_map(|(at, c)| {
        let ok = c == '_' || c.is_ascii_alphabetic() || (at > 0 && c.is_ascii_digit());
        (!ok).then_some(at)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_declared_after_the_path() {
        let template = parse("/ws/auth?<token>&{page}").expect("valid");
        assert_eq!(template.axum_path, "/ws/auth");
        assert_eq!(template.query, ["token", "page"]);
        assert_eq!(ok("/ws/{room}?<token>").0, "/ws/{room}");
        assert!(err("/ws?token").contains("not a query parameter declaration"));
        assert!(err("/ws?<a>&").contains("not a query parameter declaration"));
        assert!(err("/ws/{id}?<id>").contains("declared twice"));
        assert!(err("/ws?<a>&<a>").contains("declared twice"));
        assert_eq!(at("/ws?<a-b>"), "-");
        assert_eq!(at("/ws?<a>&token"), "token");
    }

    #[test]
    fn each_parameter_knows_where_it_is_declared() {
        let path = "/é/{room}/<seat>/{*rest}?<token>&{page}";
        let template = parse(path).expect("valid");
        let declared = |name: &str| &path[template.declaration_of(name).expect(name)];
        assert_eq!(declared("room"), "{room}");
        assert_eq!(declared("seat"), "<seat>");
        assert_eq!(declared("rest"), "{*rest}");
        assert_eq!(declared("token"), "<token>");
        assert_eq!(declared("page"), "{page}");
        assert_eq!(template.declaration_of("missing"), None);
    }

    fn ok(path: &str) -> (String, Vec<String>) {
        let template = parse(path).unwrap_or_else(|error| panic!("{path}: {error}"));
        (template.axum_path, template.params)
    }

    fn err(path: &str) -> String {
        parse(path).expect_err(path).message
    }

    /// The part of `path` an error points at.
    fn at(path: &str) -> &str {
        &path[parse(path).expect_err(path).at]
    }

    #[test]
    fn errors_point_at_the_wrong_characters() {
        assert_eq!(at("ws"), "w");
        assert_eq!(at("/ws//x"), "//");
        assert_eq!(at("/ws/:id"), ":id");
        assert_eq!(at("/ws/{id"), "{");
        assert_eq!(at("/ws/x{id}"), "{");
        assert_eq!(at("/ws/{room-id}"), "-");
        assert_eq!(at("/ws/<1st>"), "1");
        assert_eq!(at("/ws/{*rest}/x"), "{*rest}");
        assert_eq!(at("/ws/{id}/{id}"), "{id}");
        assert_eq!(at("/é/{a-b}"), "-");
    }

    #[test]
    fn literal_paths_pass_through() {
        assert_eq!(ok("/ws"), ("/ws".to_owned(), vec![]));
        assert_eq!(ok("/"), ("/".to_owned(), vec![]));
        assert_eq!(
            ok("/api/v1/notifications/"),
            ("/api/v1/notifications/".to_owned(), vec![])
        );
    }

    #[test]
    fn braces_and_angle_brackets_give_the_same_route() {
        let expected = (
            "/ws/{room_id}/{seat}".to_owned(),
            vec!["room_id".to_owned(), "seat".to_owned()],
        );
        assert_eq!(ok("/ws/{room_id}/{seat}"), expected);
        assert_eq!(ok("/ws/<room_id>/<seat>"), expected);
        assert_eq!(ok("/ws/<room_id>/{seat}"), expected);
    }

    #[test]
    fn catch_all_must_come_last() {
        assert_eq!(
            ok("/files/{*rest}"),
            ("/files/{*rest}".to_owned(), vec!["rest".to_owned()])
        );
        assert!(err("/files/{*rest}/x").contains("must be the last segment"));
    }

    #[test]
    fn malformed_paths_are_explained() {
        assert!(err("ws").contains("must start with `/`: write \"/ws\""));
        assert!(err("/ws/:id").contains("axum 0.8 writes parameters as `{id}`"));
        assert!(err("/ws/*rest").contains("`{*rest}`"));
        assert!(err("/ws/{id").contains("unbalanced `{`"));
        assert!(err("/ws/<id").contains("unbalanced `<`"));
        assert!(err("/ws/id}").contains("unexpected `}`"));
        assert!(err("/ws/x{id}").contains("must be a whole segment"));
        assert!(err("/ws/{}").contains("without a name"));
        assert!(err("/ws/{room-id}").contains("must be a Rust identifier"));
        assert!(err("/ws//x").contains("empty segment"));
    }

    #[test]
    fn duplicate_parameters_are_rejected() {
        assert!(err("/ws/{id}/{id}").contains("`id` appears twice"));
        assert!(err("/ws/{id}/<id>").contains("`id` appears twice"));
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::parse;

        /// A parameter name: a Rust identifier.
        fn name() -> impl Strategy<Value = String> {
            "[a-z_][a-z0-9_]{0,8}".prop_filter("not `_`", |name| name != "_")
        }

        /// A path segment: a literal, `{name}` or `<name>`.
        fn segment() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-z0-9.~-]{1,8}",
                name().prop_map(|name| format!("{{{name}}}")),
                name().prop_map(|name| format!("<{name}>")),
            ]
        }

        proptest! {
            /// Whatever the string, parsing answers, and an error points inside it, on
            /// character boundaries.
            #[test]
            fn any_string_is_answered_with_a_range_inside_it(path in "\\PC{0,40}") {
                if let Err(error) = parse(&path) {
                    prop_assert!(error.at.start <= error.at.end && error.at.end <= path.len());
                    prop_assert!(path.is_char_boundary(error.at.start));
                    prop_assert!(path.is_char_boundary(error.at.end));
                    prop_assert!(!error.message.is_empty());
                }
            }

            /// A path of valid segments with distinct names parses, and its axum form has one
            /// `{name}` per parameter.
            #[test]
            fn valid_paths_parse(segments in prop::collection::vec(segment(), 1..6)) {
                let path = format!("/{}", segments.join("/"));
                let mut names: Vec<String> = Vec::new();
                for segment in &segments {
                    if let Some(name) = segment
                        .strip_prefix('{')
                        .or_else(|| segment.strip_prefix('<'))
                    {
                        names.push(name[..name.len() - 1].to_owned());
                    }
                }
                let mut unique = names.clone();
                unique.sort();
                unique.dedup();
                prop_assume!(unique.len() == names.len());
                let template = parse(&path).map_err(|error| {
                    TestCaseError::fail(format!("{path}: {}", error.message))
                })?;
                prop_assert_eq!(&template.params, &names);
                for name in &names {
                    let needle = format!("{{{name}}}");
                    prop_assert!(template.axum_path.contains(&needle));
                }
                prop_assert!(!template.axum_path.contains('<'));
            }
        }
    }
}
