//! DATA arguments: a JSON object given on the command line or read whole from stdin.

use serde_json::Value;

use crate::CliError;

/// Parses DATA: a JSON object; `None` is `{}`; `-` reads the whole of stdin (one object,
/// however large: the argument list's limit does not apply). A UTF-8 byte order mark at
/// the start is skipped.
pub(crate) fn parse_data(
    data: Option<&str>,
    what: &str,
) -> Result<serde_json::Map<String, Value>, CliError> {
    let Some(text) = data else {
        return Ok(serde_json::Map::new());
    };
    let read;
    let text = if text == "-" {
        let mut all = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut all)
            .map_err(|e| CliError::Usage(format!("{what}: reading DATA from stdin: {e}")))?;
        read = all;
        read.as_str()
    } else {
        text
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(CliError::Usage(format!(
            "{what}: DATA must be a JSON object, got {}",
            match other {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "null",
            }
        ))),
        Err(e) => Err(CliError::Usage(format!(
            "{what}: DATA is not valid JSON: {e}"
        ))),
    }
}
