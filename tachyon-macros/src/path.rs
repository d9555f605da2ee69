//! The route template: `"/ws/{room_id}"` (axum) or `"/ws/<room_id>"` (Python), checked and
//! turned into axum's syntax. Plain strings in and out, no syn types.

/// A checked route template.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Template {
    /// The path in axum's syntax.
    pub(crate) axum_path: String,
    /// The parameter names, in order.
    pub(crate) params: Vec<String>,
}

/// Checks `path` and converts it to axum's syntax.
pub(crate) fn parse(path: &str) -> Result<Template, String> {
    if !path.starts_with('/') {
        return Err(format!(
            "a WebSocket path must start with `/`: write \"/{}\"",
            path.trim_start_matches('/')
        ));
    }
    let segments: Vec<&str> = path[1..].split('/').collect();
    let mut axum_path = String::with_capacity(path.len());
    let mut params: Vec<String> = Vec::new();
    for (index, segment) in segments.iter().enumerate() {
        let last = index + 1 == segments.len();
        axum_path.push('/');
        if segment.is_empty() {
            if last {
                continue; // a trailing slash is part of the route, as in axum
            }
            return Err(format!("empty segment (`//`) in path \"{path}\""));
        }
        let param = parse_segment(segment)?;
        match param {
            None => axum_path.push_str(segment),
            Some(Param { name, catch_all }) => {
                if catch_all && !last {
                    return Err(format!(
                        "the catch-all parameter `{{*{name}}}` must be the last segment of the path"
                    ));
                }
                if params.iter().any(|existing| existing == name) {
                    return Err(format!(
                        "path parameter `{name}` appears twice in \"{path}\": give each parameter \
                         its own name"
                    ));
                }
                axum_path.push('{');
                if catch_all {
                    axum_path.push('*');
                }
                axum_path.push_str(name);
                axum_path.push('}');
                params.push(name.to_owned());
            }
        }
    }
    Ok(Template { axum_path, params })
}

struct Param<'a> {
    name: &'a str,
    catch_all: bool,
}

/// A segment is a literal, or a whole `{name}` / `{*name}` / `<name>` parameter.
fn parse_segment(segment: &str) -> Result<Option<Param<'_>>, String> {
    if let Some(name) = segment.strip_prefix(':') {
        return Err(format!(
            "`{segment}` is the path syntax of axum 0.7 and earlier; axum 0.8 writes parameters \
             as `{{{name}}}`"
        ));
    }
    if let Some(name) = segment.strip_prefix('*') {
        return Err(format!(
            "`{segment}` is the path syntax of axum 0.7 and earlier; write a catch-all \
             parameter as `{{*{name}}}`"
        ));
    }
    let inner = if let Some(rest) = segment.strip_prefix('{') {
        match rest.strip_suffix('}') {
            Some(inner) => inner,
            None => return Err(unbalanced(segment, '{', '}')),
        }
    } else if let Some(rest) = segment.strip_prefix('<') {
        match rest.strip_suffix('>') {
            Some(inner) => inner,
            None => return Err(unbalanced(segment, '<', '>')),
        }
    } else {
        if let Some(bracket) = segment.chars().find(|c| matches!(c, '{' | '}' | '<' | '>')) {
            return Err(format!(
                "unexpected `{bracket}` in path segment `{segment}`: a parameter must be a whole \
                 segment, like `/{{name}}`"
            ));
        }
        return Ok(None);
    };
    let (name, catch_all) = match inner.strip_prefix('*') {
        Some(name) => (name, true),
        None => (inner, false),
    };
    if name.is_empty() {
        return Err(format!(
            "path segment `{segment}` has a parameter without a name"
        ));
    }
    if !is_identifier(name) {
        return Err(format!(
            "path parameter `{name}` must be a Rust identifier, to match an argument of the \
             handler by name"
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

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first == '_' || first.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
        && name != "_"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(path: &str) -> (String, Vec<String>) {
        let template = parse(path).unwrap_or_else(|error| panic!("{path}: {error}"));
        (template.axum_path, template.params)
    }

    fn err(path: &str) -> String {
        parse(path).expect_err(path)
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
}
