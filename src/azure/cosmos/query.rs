//! Cosmos DB SQL queries: the parameterised query body and its paging options.

use serde_json::{Map, Value};

use super::keys::PartitionKey;
use crate::error::Error;

/// A SQL query with named parameters, e.g.
/// `Query::new("SELECT * FROM c WHERE c.status = @s").param("@s", "failed")`.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    sql: String,
    parameters: Vec<(String, Value)>,
}

impl Query {
    /// A query with no parameters.
    pub fn new(sql: impl Into<String>) -> Self {
        Query {
            sql: sql.into(),
            parameters: Vec::new(),
        }
    }

    /// Adds a parameter; its name must start with `@` (checked when the query is sent).
    pub fn param(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.parameters.push((name.into(), value.into()));
        self
    }

    /// The SQL text.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The request body `{"query", "parameters": [{"name", "value"}]}`, or why it is invalid.
    pub(crate) fn to_body(&self) -> Result<Value, Error> {
        if self.sql.trim().is_empty() {
            return Err(Error::invalid_input("the query text is empty"));
        }
        let mut parameters = Vec::with_capacity(self.parameters.len());
        for (name, value) in &self.parameters {
            let valid = name.strip_prefix('@').is_some_and(|rest| {
                !rest.is_empty() && rest.chars().all(|c| c.is_alphanumeric() || c == '_')
            });
            if !valid {
                return Err(Error::invalid_input(format!(
                    "query parameter name `{name}` must be `@` followed by letters, digits or `_`"
                )));
            }
            let mut parameter = Map::new();
            parameter.insert("name".into(), Value::from(name.as_str()));
            parameter.insert("value".into(), value.clone());
            parameters.push(Value::Object(parameter));
        }
        let mut body = Map::new();
        body.insert("query".into(), Value::from(self.sql.as_str()));
        body.insert("parameters".into(), Value::Array(parameters));
        Ok(Value::Object(body))
    }
}

/// How a query is paged and scoped.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryOptions {
    /// Items per page (`x-ms-max-item-count`), at least 1. Default 100.
    pub page_size: u32,
    /// Scope the query to one partition (also filter on it in WHERE: the emulator ignores
    /// this header).
    pub partition_key: Option<PartitionKey>,
}

impl Default for QueryOptions {
    fn default() -> Self {
        QueryOptions {
            page_size: 100,
            partition_key: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn body_carries_sql_and_parameters_in_order() {
        let query = Query::new("SELECT * FROM c WHERE c.status = @status AND c.lastUpdated < @t")
            .param("@status", "failed")
            .param("@t", 100);
        assert_eq!(
            query.to_body().unwrap(),
            json!({
                "query": "SELECT * FROM c WHERE c.status = @status AND c.lastUpdated < @t",
                "parameters": [{"name": "@status", "value": "failed"}, {"name": "@t", "value": 100}]
            })
        );
    }

    #[test]
    fn bad_parameter_names_and_empty_sql_are_refused() {
        assert!(Query::new("SELECT 1").param("status", 1).to_body().is_err());
        assert!(Query::new("SELECT 1").param("@", 1).to_body().is_err());
        assert!(Query::new("SELECT 1").param("@a b", 1).to_body().is_err());
        assert!(Query::new("  ").to_body().is_err());
    }
}
