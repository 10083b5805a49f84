//! A blocking HTTP client for the tests, on top of ureq, that treats every status as an answer.
//!
//! ureq 2 reports 4xx/5xx as `Err(Error::Status(..))`; the gateway's error responses are exactly
//! what these tests look at, so they come back as an ordinary `Response`.

use std::time::Duration;

use serde_json::Value;

/// An HTTP response, fully read.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers in order, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl Response {
    /// First value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as JSON.
    ///
    /// # Panics
    /// When the body is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}); status {}, body {:?}",
                self.status, self.body
            )
        })
    }

    /// The `Upstream` fixture's echo of the proxied request.
    ///
    /// # Panics
    /// When the body is not an echo (the request did not reach an upstream).
    pub fn echo(&self) -> Echo {
        let json = self.json();
        assert!(
            json.get("upstream").is_some(),
            "expected an upstream echo; status {}, body {}",
            self.status,
            self.body
        );
        Echo(json)
    }
}

/// What an `Upstream` fixture saw, as echoed back in its response body.
#[derive(Debug, Clone)]
pub struct Echo(pub Value);

impl Echo {
    /// Name of the upstream fixture that answered.
    pub fn upstream(&self) -> &str {
        self.0["upstream"].as_str().unwrap_or_default()
    }

    /// Method the upstream received.
    pub fn method(&self) -> &str {
        self.0["method"].as_str().unwrap_or_default()
    }

    /// Path (with query) the upstream received.
    pub fn path(&self) -> &str {
        self.0["path"].as_str().unwrap_or_default()
    }

    /// A request header the upstream received (repeated headers joined with ", ").
    pub fn header(&self, name: &str) -> Option<&str> {
        self.0["headers"]
            .get(name.to_ascii_lowercase())
            .and_then(Value::as_str)
    }

    /// How many times a header appeared in the upstream's request.
    pub fn header_count(&self, name: &str) -> usize {
        let name = name.to_ascii_lowercase();
        self.0["header_list"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter(|pair| pair[0].as_str() == Some(name.as_str()))
                    .count()
            })
            .unwrap_or(0)
    }
}

/// A client with its own connection pool; every status is a `Response`.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

impl Client {
    /// A client with a 10 s overall timeout per request and no redirect following.
    pub fn new() -> Client {
        Client::with_timeout(Duration::from_secs(10))
    }

    /// A client with the given overall timeout per request.
    pub fn with_timeout(timeout: Duration) -> Client {
        let agent = ureq::AgentBuilder::new()
            .timeout(timeout)
            .timeout_connect(Duration::from_secs(2))
            .redirects(0)
            .user_agent("portcullis-tests/1.0")
            .build();
        Client { agent }
    }

    /// `GET url`.
    ///
    /// # Panics
    /// On a transport error (no HTTP response at all).
    pub fn get(&self, url: &str) -> Response {
        self.send("GET", url, &[], None)
    }

    /// `GET url` with extra headers.
    ///
    /// # Panics
    /// On a transport error.
    pub fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> Response {
        self.send("GET", url, headers, None)
    }

    /// `POST url` with a body.
    ///
    /// # Panics
    /// On a transport error.
    pub fn post(&self, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        self.send("POST", url, headers, Some(body))
    }

    /// Any request.
    ///
    /// # Panics
    /// On a transport error.
    pub fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Response {
        self.try_send(method, url, headers, body)
            .unwrap_or_else(|e| panic!("{method} {url}: no HTTP response: {e}"))
    }

    /// Any request; a transport error comes back as `Err` with its description.
    pub fn try_send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response, String> {
        let mut request = self.agent.request(method, url);
        for (name, value) in headers {
            request = request.set(name, value);
        }
        let result = match body {
            Some(body) => request.send_bytes(body),
            None => request.call(),
        };
        let response = match result {
            Ok(response) => response,
            Err(ureq::Error::Status(_, response)) => response,
            Err(e) => return Err(e.to_string()),
        };
        let status = response.status();
        let mut names = response.headers_names();
        names.dedup();
        let mut seen = Vec::new();
        let mut headers = Vec::new();
        for name in names {
            if seen.contains(&name) {
                continue;
            }
            for value in response.all(&name) {
                headers.push((name.clone(), value.to_string()));
            }
            seen.push(name);
        }
        let body = response
            .into_string()
            .map_err(|e| format!("reading body: {e}"))?;
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// Asserts a gateway error response: the status, a JSON content type, the `error` code, a
/// non-empty `message`, and a `request_id` equal to the `X-Request-Id` header.
///
/// # Panics
/// When any of that does not hold.
pub fn assert_error(response: &Response, status: u16, code: &str) {
    assert_eq!(response.status, status, "status; body {}", response.body);
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "error content-type is {content_type:?}, want application/json; body {}",
        response.body
    );
    let json = response.json();
    assert_eq!(
        json["error"].as_str(),
        Some(code),
        "error code; body {}",
        response.body
    );
    assert!(
        json["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error message missing; body {}",
        response.body
    );
    let id = response.header("x-request-id");
    assert!(
        id.is_some(),
        "error response without X-Request-Id; headers {:?}",
        response.headers
    );
    assert_eq!(
        json["request_id"].as_str(),
        id,
        "body request_id vs X-Request-Id header"
    );
}
