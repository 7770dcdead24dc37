//! Parsing a binary's flags, with errors that say where a bad value came
//! from.

use clap::error::{ContextKind, ContextValue, ErrorKind};

/// Parses the process's arguments into `P`, or exits as clap does (status
/// 2 for bad input). A bad value that came from an environment variable
/// says so (`invalid value 'soon' for '--visibility-timeout <DURATION>'
/// (from $SPOOL_VISIBILITY_TIMEOUT)`), since the command line holds no
/// such value.
#[must_use]
pub fn parse<P: clap::Parser>() -> P {
    match P::try_parse() {
        Ok(parsed) => parsed,
        Err(e) => name_env_source(e, &P::command()).exit(),
    }
}

/// `e`, naming the environment variable its bad value came from, when it
/// came from one and not from the command line.
#[must_use]
pub fn name_env_source(e: clap::Error, command: &clap::Command) -> clap::Error {
    if !matches!(
        e.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return e;
    }
    let (Some(ContextValue::String(arg)), Some(ContextValue::String(value))) = (
        e.get(ContextKind::InvalidArg),
        e.get(ContextKind::InvalidValue),
    ) else {
        return e;
    };
    // An argument renders (`--flag <VALUE>`) only once its command is built.
    let mut command = command.clone();
    command.build();
    let given_on_command_line = std::env::args_os().skip(1).any(|a| {
        a.to_str()
            .is_some_and(|a| a == value || a.ends_with(&format!("={value}")))
    });
    let env = command
        .get_arguments()
        .chain(
            command
                .get_subcommands()
                .flat_map(clap::Command::get_arguments),
        )
        .filter(|a| a.to_string() == *arg)
        .find_map(|a| a.get_env())
        .filter(|env| std::env::var_os(env).is_some_and(|v| v.to_str() == Some(value.as_str())));
    match env {
        Some(env) if !given_on_command_line => {
            let text = e.render().to_string();
            let text = text.strip_prefix("error: ").unwrap_or(&text);
            let text = text.replacen(
                &format!("'{arg}'"),
                &format!("'{arg}' (from ${})", env.to_string_lossy()),
                1,
            );
            clap::Error::raw(e.kind(), text).with_cmd(&command)
        }
        _ => e,
    }
}
