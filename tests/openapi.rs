//! `openapi.json` against the code, so the document cannot drift: the
//! routes the router serves are the paths and methods it documents, and
//! every error code the API can answer with is in it.
//!
//! The routes are read twice: from the source (`.route("PATH", get(…).post(…))`
//! in `src/api`) and from the running router, which must serve every
//! documented operation and answer 405 to every other method on those paths.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use pound::api::{ApiConfig, ApiState, OPENAPI_JSON, router};
use pound::metrics::Metrics;
use reqwest::{Method, StatusCode};
use serde_json::Value;

const KEY: &str = "openapi-test-key";
const METHODS: [&str; 7] = ["get", "post", "put", "delete", "patch", "head", "options"];

fn document() -> Value {
    serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON")
}

/// The `.rs` files under `dir`, with their text.
fn sources(dir: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push((path.display().to_string(), std::fs::read_to_string(&path).unwrap()));
        }
    }
    files
}

fn src(dir: &str) -> Vec<(String, String)> {
    sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir))
}

/// The text between the `(` at `open` and its matching `)`, skipping string literals.
fn balanced(text: &str, open: usize) -> &str {
    let bytes = text.as_bytes();
    let (mut depth, mut in_string, mut i) = (0usize, false, open);
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_string => i += 1,
            b'"' => in_string = !in_string,
            b'(' | b'{' | b'[' if !in_string => depth += 1,
            b')' | b'}' | b']' if !in_string => {
                depth -= 1;
                if depth == 0 {
                    return &text[open + 1..i];
                }
            }
            _ => {}
        }
        i += 1;
    }
    panic!("unbalanced call at byte {open}")
}

/// The arguments of every call `name(…)` in `text`, split at top-level commas.
fn calls(text: &str, name: &str) -> Vec<Vec<String>> {
    text.match_indices(name)
        .map(|(at, _)| {
            let args = balanced(text, at + name.len() - 1);
            let (mut parts, mut current, mut depth, mut in_string) = (Vec::new(), String::new(), 0i32, false);
            let mut chars = args.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' if in_string => {
                        current.push(c);
                        current.extend(chars.next());
                        continue;
                    }
                    '"' => in_string = !in_string,
                    '(' | '{' | '[' if !in_string => depth += 1,
                    ')' | '}' | ']' if !in_string => depth -= 1,
                    ',' if !in_string && depth == 0 => {
                        parts.push(std::mem::take(&mut current).trim().to_string());
                        continue;
                    }
                    _ => {}
                }
                current.push(c);
            }
            parts.push(current.trim().to_string());
            parts
        })
        .collect()
}

/// The string literal `arg` is, if it is one.
fn literal(arg: &str) -> Option<String> {
    arg.strip_prefix('"')?.strip_suffix('"').map(str::to_string)
}

/// The snake_case string literals in the body of `fn NAME` in `text`.
fn codes_in_fn(text: &str, name: &str) -> BTreeSet<String> {
    let start = text.find(&format!("fn {name}(")).unwrap_or_else(|| panic!("no fn {name}"));
    let body = balanced(text, start + text[start..].find('{').unwrap());
    body.split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        .map(str::to_string)
        .collect()
}

/// Every error code the code can put in `{"error":{"code":…}}`: the code
/// argument of each `ApiError::new`, followed where it is computed, and the
/// readiness reasons (`/readyz` answers its first reason as `error`).
fn error_codes_in_the_code() -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |path: &str| std::fs::read_to_string(root.join(path)).unwrap();
    let mut codes = BTreeSet::new();
    for (file, text) in src("") {
        for args in calls(&text, "Reason::new(") {
            match literal(&args[0]) {
                Some(code) => codes.insert(code),
                None if file.ends_with("src/api/ready.rs") && args[0] == "code" => continue, // the constructor
                None => panic!("{file}: Reason::new with a computed code `{}`", args[0]),
            };
        }
        for args in calls(&text, "ApiError::new(") {
            if file.ends_with("src/api/error.rs") && args[1] == "code" {
                continue; // the constructor itself
            }
            match (literal(&args[1]), args[1].as_str()) {
                (Some(code), _) => {
                    codes.insert(code);
                }
                (None, "refusal.code()") => codes.extend(codes_in_fn(&read("src/policy/numbers.rs"), "code")),
                (None, "code") if file.ends_with("src/api/admission.rs") => {
                    codes.extend(codes_in_fn(&read("src/api/admission.rs"), "limited"))
                }
                (None, other) => panic!(
                    "{file}: ApiError::new with a computed code `{other}`: teach tests/openapi.rs where its values come from"
                ),
            }
        }
    }
    codes
}

#[test]
fn every_error_code_the_api_returns_is_documented_and_no_other() {
    let doc = document();
    let enumerated: BTreeSet<String> =
        doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|code| code.as_str().unwrap().to_string())
            .collect();
    let in_code = error_codes_in_the_code();
    assert!(in_code.len() >= 20, "the scan found too few codes to be working: {in_code:?}");
    let undocumented: Vec<_> = in_code.difference(&enumerated).collect();
    assert!(undocumented.is_empty(), "error codes missing from openapi.json's Error.code enum: {undocumented:?}");
    let stale: Vec<_> = enumerated.difference(&in_code).collect();
    assert!(stale.is_empty(), "openapi.json lists error codes the code never returns: {stale:?}");
    // Each code is also explained where it can happen, not only listed.
    let text = OPENAPI_JSON;
    for code in &in_code {
        assert!(text.matches(code.as_str()).count() >= 2, "{code} is in the enum but no response describes it");
    }
}

/// `(path, method)` of every `.route("PATH", …)` in `src/api`, with axum's
/// `{param}` syntax, which is also OpenAPI's.
fn routes_in_the_code() -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for (file, text) in src("api") {
        for args in calls(&text, ".route(") {
            let path = literal(&args[0]).unwrap_or_else(|| panic!("{file}: a route whose path is not a literal"));
            let handlers = &args[1];
            for method in METHODS {
                let used = handlers.match_indices(&format!("{method}(")).any(|(at, _)| {
                    at == 0
                        || !handlers.as_bytes()[at - 1].is_ascii_alphanumeric() && handlers.as_bytes()[at - 1] != b'_'
                });
                if used {
                    routes.insert((path.clone(), method.to_string()));
                }
            }
        }
    }
    routes
}

fn operations_in_the_document(doc: &Value) -> BTreeSet<(String, String)> {
    doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| METHODS.contains(&k.as_str()))
                .map(|m| (path.clone(), m.clone()))
        })
        .collect()
}

#[test]
fn the_routes_in_the_source_are_the_operations_in_the_document() {
    let in_code = routes_in_the_code();
    assert!(in_code.len() >= 8, "the scan found too few routes to be working: {in_code:?}");
    let documented = operations_in_the_document(&document());
    let undocumented: Vec<_> = in_code.difference(&documented).collect();
    assert!(undocumented.is_empty(), "routes missing from openapi.json: {undocumented:?}");
    let missing: Vec<_> = documented.difference(&in_code).collect();
    assert!(missing.is_empty(), "openapi.json documents routes the router does not have: {missing:?}");
}

/// A documented path with its parameters filled in from their examples.
fn concrete(path: &str, operation: &Value) -> String {
    let mut path = path.to_string();
    for param in operation["parameters"].as_array().into_iter().flatten() {
        if param["in"] == "path" {
            let name = param["name"].as_str().unwrap();
            let example =
                param["example"].as_str().unwrap_or_else(|| panic!("{path}: parameter {name} has no example"));
            path = path.replace(&format!("{{{name}}}"), example);
        }
    }
    path
}

#[tokio::test]
async fn the_running_router_serves_exactly_the_documented_operations() {
    let dir = tempfile::tempdir().unwrap();
    let store = pound::store::open(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
    let config = ApiConfig { api_keys: vec![KEY.into()], ..ApiConfig::default() };
    let state = ApiState {
        store,
        config,
        metrics: Arc::new(Metrics::new()),
        ready: Arc::new(AtomicBool::new(true)),
        new_work: Default::default(),
        webhook_queued: Default::default(),
        clock: pound::clock::Clock::System,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router(state)).await.unwrap() });
    let client = reqwest::Client::new();

    let doc = document();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let item = item.as_object().unwrap();
        let example = item.values().next().unwrap();
        let url = format!("{base}{}", concrete(path, example));
        for method in METHODS.into_iter().filter(|m| !["head", "options"].contains(m)) {
            let request = client.request(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(), &url);
            let response = request.bearer_auth(KEY).header("content-type", "application/json").body("{}").send().await;
            let response = response.unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let unrouted = status == StatusCode::METHOD_NOT_ALLOWED
                || (status == StatusCode::NOT_FOUND && body["error"]["message"] == "no such route");
            if item.contains_key(method) {
                assert!(!unrouted, "{method} {path} is documented but the router answers {status} {body}");
            } else {
                assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path} is served but not documented");
            }
        }
    }
}

#[test]
fn every_request_field_and_parameter_has_a_pattern_or_enum_and_an_example() {
    let doc = document();
    let create = &doc["components"]["schemas"]["CreateVerification"]["properties"];
    assert_eq!(create["phone"]["pattern"], r"^\+[1-9][0-9]{7,14}$");
    for (name, field) in create.as_object().unwrap() {
        assert!(field["examples"].as_array().is_some_and(|e| !e.is_empty()), "{name} has no example");
        // An integer's shape is its range.
        let bounded = field.get("minimum").is_some() && field.get("maximum").is_some();
        let shaped = field.get("pattern").or(field.get("enum")).is_some() || bounded;
        assert!(shaped || name == "dialplan", "{name} has no pattern");
    }
    // What the code accepts: null is the same as absent for the optional fields.
    for name in ["dialplan", "callback_url", "code"] {
        assert_eq!(create[name]["type"], serde_json::json!(["string", "null"]), "{name}");
    }
    assert_eq!(create["code_length"]["type"], serde_json::json!(["integer", "null"]));
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for param in operation["parameters"].as_array().into_iter().flatten() {
                let name = param["name"].as_str().unwrap();
                assert!(param.get("example").is_some(), "{method} {path}: {name} has no example");
            }
        }
    }
}
