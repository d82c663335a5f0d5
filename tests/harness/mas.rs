//! The harness's part for the Matrix Authentication Service: the contract
//! server (tools/servers/mas.py) stands in for MAS. The harness reads users
//! through the admin API with a token of its own, and reads the contract
//! server's request log to prove that every request the module sent, and
//! every answer it got, conforms to the published spec.

use serde_json::{json, Value};

use super::{http, merge, ModuleRun, Server};

impl Server {
    /// The connection parameters of a module run against this MAS.
    pub fn mas_connection(&self) -> Value {
        json!({
            "homeserver": "mas",
            "mas_url": self.url,
            "mas_client_id": self.info["client_id"],
            "mas_client_secret": self.info["client_secret"],
            "wait_timeout": 5,
        })
    }

    /// Runs the module with `args` on top of [`Server::mas_connection`], and
    /// checks that neither the client secret nor any MAS token appears in
    /// its output.
    pub fn mas_module(&self, args: Value) -> ModuleRun {
        self.mas_module_within(super::MODULE_RUN_LIMIT, args)
    }

    /// [`Server::mas_module`] that must end within `limit` (see [`Server::module_within`]).
    pub fn mas_module_within(&self, limit: std::time::Duration, args: Value) -> ModuleRun {
        let mut all = self.mas_connection();
        merge(&mut all, args);
        let secret = self.info["client_secret"].as_str().unwrap().to_string();
        let run = super::run_module_limited(
            &super::ModuleBinary::native(),
            all,
            vec![secret],
            &[],
            limit,
        );
        for output in [&run.stdout, &run.stderr] {
            assert!(
                find_mas_token(output).is_none(),
                "a MAS token leaked into the module's output: {output}"
            );
        }
        run
    }

    /// A fresh admin token of the harness's own, by the client-credentials
    /// grant with the client's configured authentication method. Fresh each
    /// time, because some tests make tokens expire within a second.
    pub fn mas_harness_token(&self) -> String {
        let client_id = self.info["client_id"].as_str().unwrap();
        let secret = self.info["client_secret"].as_str().unwrap();
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("scope", "urn:mas:admin"),
        ];
        let mut request = http().post(format!("{}/oauth2/token", self.url));
        if self.info["client_auth_method"] == "client_secret_post" {
            form.extend([("client_id", client_id), ("client_secret", secret)]);
        } else {
            request = request.basic_auth(client_id, Some(secret));
        }
        let response = request.form(&form).send().unwrap();
        assert_eq!(response.status().as_u16(), 200, "harness token request");
        let body: Value = response.json().unwrap();
        body["access_token"].as_str().unwrap().to_string()
    }

    /// MAS's view of a user (the `attributes` of its resource, plus `id`),
    /// or `None` when it does not exist.
    pub fn mas_user(&self, localpart: &str) -> Option<Value> {
        let path = format!(
            "/api/admin/v1/users/by-username/{}",
            super::encode(localpart)
        );
        match self.get(&path, Some(&self.mas_harness_token())) {
            (200, body) => {
                let mut user = body["data"]["attributes"].clone();
                user["id"] = body["data"]["id"].clone();
                Some(user)
            }
            (404, _) => None,
            other => panic!("reading {localpart} from MAS: {other:?}"),
        }
    }

    pub fn mas_is_admin(&self, localpart: &str) -> bool {
        self.mas_user(localpart).expect("the user exists")["admin"] == json!(true)
    }

    pub fn mas_is_locked(&self, localpart: &str) -> bool {
        !self.mas_user(localpart).expect("the user exists")["locked_at"].is_null()
    }

    pub fn mas_is_deactivated(&self, localpart: &str) -> bool {
        !self.mas_user(localpart).expect("the user exists")["deactivated_at"].is_null()
    }

    /// The e-mail addresses MAS holds for a user.
    pub fn mas_emails(&self, localpart: &str) -> Vec<String> {
        let id = self.mas_user(localpart).expect("the user exists")["id"]
            .as_str()
            .unwrap()
            .to_string();
        let path = format!("/api/admin/v1/user-emails?filter[user]={id}&page[first]=100");
        let (status, body) = self.get(&path, Some(&self.mas_harness_token()));
        assert_eq!(status, 200, "e-mails of {localpart}: {body}");
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["attributes"]["email"].as_str().unwrap().to_string())
            .collect()
    }

    /// Whether the user has a compatibility session (a Matrix client's login) open.
    pub fn mas_has_active_session(&self, localpart: &str) -> bool {
        let path = format!(
            "/api/admin/v1/users?filter[search]={}&filter[has-active-compat-session]=true",
            super::encode(localpart)
        );
        let (status, body) = self.get(&path, Some(&self.mas_harness_token()));
        assert_eq!(status, 200, "sessions of {localpart}: {body}");
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["attributes"]["username"] == json!(localpart))
    }

    /// The display name the homeserver behind MAS got for a user (the contract
    /// server stands in for it, at the Matrix profile endpoint).
    pub fn mas_homeserver_displayname(&self, localpart: &str) -> Value {
        let user_id = super::encode(&format!("@{localpart}:{}", self.server_name));
        let (status, body) = self.get(&format!("/_matrix/client/v3/profile/{user_id}"), None);
        assert_eq!(status, 200, "profile of {localpart}: {body}");
        body["displayname"].clone()
    }

    /// The ID of the upstream provider MAS lists as `human_name`.
    pub fn mas_provider_id(&self, human_name: &str) -> String {
        let path = "/api/admin/v1/upstream-oauth-providers?page[first]=100";
        let (status, body) = self.get(path, Some(&self.mas_harness_token()));
        assert_eq!(status, 200, "upstream providers: {body}");
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["attributes"]["human_name"] == json!(human_name))
            .unwrap_or_else(|| panic!("no provider {human_name}: {body}"))["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// A user's upstream links, as (provider ID, subject).
    pub fn mas_upstream_links(&self, localpart: &str) -> Vec<(String, String)> {
        let id = self.mas_user(localpart).expect("the user exists")["id"]
            .as_str()
            .unwrap()
            .to_string();
        let path = format!("/api/admin/v1/upstream-oauth-links?filter[user]={id}&page[first]=100");
        let (status, body) = self.get(&path, Some(&self.mas_harness_token()));
        assert_eq!(status, 200, "upstream links of {localpart}: {body}");
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                let attribute = |name: &str| l["attributes"][name].as_str().unwrap().to_string();
                (attribute("provider_id"), attribute("subject"))
            })
            .collect()
    }

    /// Every request the contract server has answered, oldest first.
    pub fn mas_request_log(&self) -> Vec<Value> {
        let path = self.info["request_log"].as_str().unwrap();
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// No request so far broke the spec, and no answer did either.
    pub fn assert_no_contract_violations(&self) {
        let broken: Vec<Value> = self
            .mas_request_log()
            .into_iter()
            .filter(|e| e["request_valid"] == json!(false) || e["response_valid"] == json!(false))
            .collect();
        assert!(
            broken.is_empty(),
            "requests or answers that break the MAS spec: {broken:#?}"
        );
    }
}

/// The first thing shaped like a MAS token (`mat_`, `mct_`, ... then 30
/// letters or digits, `_` and a 6-character checksum), if any.
pub fn find_mas_token(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    (0..=bytes.len().checked_sub(41)?).find_map(|start| {
        let candidate = &bytes[start..start + 41];
        let shaped = candidate[0] == b'm'
            && candidate[2] == b't'
            && candidate[3] == b'_'
            && candidate[34] == b'_'
            && candidate[4..34].iter().all(u8::is_ascii_alphanumeric)
            && candidate[35..].iter().all(u8::is_ascii_alphanumeric);
        shaped.then(|| &text[start..start + 41])
    })
}
