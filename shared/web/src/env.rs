//! Reading settings from the environment so that the list of the variables a function reads comes
//! from the code that reads them, never from a list kept beside it.
//!
//! A settings type implements [`FromEnv`]: its `read` asks an [`Env`] for each variable it needs.
//! The `Env` records every name it is asked for, and collects what is wrong instead of stopping at
//! the first problem, so `read` asks for the same names whatever the values are. One function then
//! serves two uses:
//!
//! - at start, [`FromEnv::from_env`]: the settings, or the first problem, which names its variable;
//! - in the deployment test, [`variables`]: every name a function reads, and which of them it cannot
//!   start without (those it asks for while nothing is set, and reports missing).
//!
//! The one rule for a `read`: ask for every variable before combining what came back
//! (`Some(Self { a: a?, b: b? })` at the end), so a missing variable does not hide the ones after it.
//! Readers of other crates that take a lookup closure get [`Env::lookup`], which records too.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;

/// A variable is missing or unusable; the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is not set.
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    /// A variable is set to something unusable.
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// A reader of another crate refused a value; its message names the variable.
    #[error("{0}")]
    Refused(String),
}

/// The environment as one settings type reads it: every name asked is recorded, every problem kept.
pub struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    asked: RefCell<BTreeSet<String>>,
    problems: RefCell<Vec<ConfigError>>,
}

impl fmt::Debug for Env<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Env")
            .field("asked", &self.asked.borrow())
            .field("problems", &self.problems.borrow())
            .finish_non_exhaustive()
    }
}

impl<'a> Env<'a> {
    /// Variables read through `lookup` (the process environment: `|name| std::env::var(name).ok()`).
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self {
            lookup,
            asked: RefCell::new(BTreeSet::new()),
            problems: RefCell::new(Vec::new()),
        }
    }

    /// A variable's value as set, untrimmed; recorded.
    pub fn raw(&self, name: &str) -> Option<String> {
        self.asked.borrow_mut().insert(name.to_owned());
        (self.lookup)(name)
    }

    /// A variable's value, trimmed; `None` when it is unset or blank. Recorded.
    pub fn get(&self, name: &str) -> Option<String> {
        self.raw(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// A lookup closure for readers that take one (they see values as set, untrimmed); every name
    /// they ask for is recorded.
    pub fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        move |name| self.raw(name)
    }

    /// A variable the settings cannot do without, parsed; `None` (and a problem kept) when it is
    /// unset or `parse` refuses it with a reason.
    pub fn required<T>(
        &self,
        name: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match self.get(name) {
            Some(value) => self.parsed(name, parse(&value)),
            None => {
                self.problem(ConfigError::Missing(name));
                None
            }
        }
    }

    /// A variable that may be unset (`None`); a value `parse` refuses is kept as a problem.
    pub fn optional<T>(
        &self,
        name: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let value = self.get(name)?;
        self.parsed(name, parse(&value))
    }

    /// A variable with a default when unset; a value `parse` refuses is kept as a problem.
    pub fn or<T>(
        &self,
        name: &'static str,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> T {
        match self.get(name) {
            Some(value) => self.parsed(name, parse(&value)).unwrap_or(default),
            None => default,
        }
    }

    /// What another crate's reader made of its variables; its refusal (whose message names the
    /// variable) is kept as a problem.
    pub fn check<T, E: fmt::Display>(&self, result: Result<T, E>) -> Option<T> {
        result
            .map_err(|err| self.problem(ConfigError::Refused(err.to_string())))
            .ok()
    }

    /// Keeps a problem found while reading.
    pub fn problem(&self, error: ConfigError) {
        self.problems.borrow_mut().push(error);
    }

    /// Every name asked for so far.
    pub fn asked(&self) -> BTreeSet<String> {
        self.asked.borrow().clone()
    }

    /// The settings `read` built, or the first problem found while reading.
    pub fn finish<T>(self, read: Option<T>) -> Result<T, ConfigError> {
        if let Some(first) = self.problems.into_inner().into_iter().next() {
            return Err(first);
        }
        read.ok_or_else(|| {
            ConfigError::Refused("the settings could not be read (no variable named)".into())
        })
    }

    fn parsed<T>(&self, name: &'static str, parsed: Result<T, String>) -> Option<T> {
        parsed
            .map_err(|reason| self.problem(ConfigError::Invalid { name, reason }))
            .ok()
    }
}

/// Settings read from the environment, once, at start.
pub trait FromEnv: Sized {
    /// Asks `env` for every variable the settings need (all of them, before combining: see the
    /// module's rule); `None` when something is missing or invalid, the reason being kept in `env`.
    fn read(env: &Env<'_>) -> Option<Self>;

    /// Reads variables through `lookup`; the error names the first variable that is wrong.
    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env::new(&lookup);
        let read = Self::read(&env);
        env.finish(read)
    }

    /// Reads the process environment.
    fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }
}

/// The variables some reading code asks for, found by running it with nothing set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Variables {
    /// Every variable read.
    pub read: BTreeSet<String>,
    /// Those it cannot start without: reported missing when nothing is set.
    pub required: BTreeSet<String>,
}

/// The variables that `read` asks for, and which of them have no default.
pub fn variables(read: impl FnOnce(&Env<'_>)) -> Variables {
    let nothing = |_: &str| None;
    let env = Env::new(&nothing);
    read(&env);
    let required = env
        .problems
        .borrow()
        .iter()
        .filter_map(|problem| match problem {
            ConfigError::Missing(name) => Some((*name).to_owned()),
            _ => None,
        })
        .collect();
    Variables {
        read: env.asked(),
        required,
    }
}

/// The variables of one settings type.
pub fn variables_of<C: FromEnv>() -> Variables {
    variables(|env| {
        let _ = C::read(env);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Sample {
        url: String,
        port: u16,
        label: Option<String>,
        from_elsewhere: bool,
    }

    fn elsewhere(lookup: impl Fn(&str) -> Option<String>) -> Result<bool, String> {
        match lookup("ELSEWHERE").as_deref() {
            None | Some("no") => Ok(false),
            Some("yes") => Ok(true),
            Some(_) => Err("ELSEWHERE must be yes or no".into()),
        }
    }

    impl FromEnv for Sample {
        fn read(env: &Env<'_>) -> Option<Self> {
            let url = env.required("URL", |v| Ok(v.to_owned()));
            let port = env.or("PORT", 80, |v| v.parse().map_err(|_| "not a port".into()));
            let label = env.optional("LABEL", |v| Ok(v.to_owned()));
            let from_elsewhere = env.check(elsewhere(env.lookup()));
            Some(Self {
                url: url?,
                port,
                label,
                from_elsewhere: from_elsewhere?,
            })
        }
    }

    fn read(vars: &[(&str, &str)]) -> Result<Sample, ConfigError> {
        Sample::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn the_list_is_what_the_code_asks_for_and_the_required_ones_are_those_without_default() {
        let vars = variables_of::<Sample>();
        assert_eq!(
            vars.read.into_iter().collect::<Vec<_>>(),
            ["ELSEWHERE", "LABEL", "PORT", "URL"]
        );
        assert_eq!(vars.required.into_iter().collect::<Vec<_>>(), ["URL"]);
    }

    #[test]
    fn values_are_trimmed_defaults_apply_and_the_first_problem_names_its_variable() {
        let s = read(&[("URL", " https://a "), ("ELSEWHERE", "yes")]).unwrap();
        assert_eq!((s.url.as_str(), s.port, s.label), ("https://a", 80, None));
        assert!(s.from_elsewhere);
        assert_eq!(read(&[]).unwrap_err(), ConfigError::Missing("URL"));
        let err = read(&[("URL", "u"), ("PORT", "eighty")]).unwrap_err();
        assert_eq!(
            err,
            ConfigError::Invalid {
                name: "PORT",
                reason: "not a port".into()
            }
        );
        let err = read(&[("URL", "u"), ("ELSEWHERE", "maybe")]).unwrap_err();
        assert!(err.to_string().contains("ELSEWHERE"), "{err}");
        // A problem does not stop the reading: every name is still asked for.
        let lookup = |_: &str| Some("bad".to_owned());
        let env = Env::new(&lookup);
        let _ = Sample::read(&env);
        assert_eq!(env.asked().len(), 4);
    }
}
