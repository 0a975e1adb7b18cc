//! The user aggregate shared by the `users` and `cqrs` examples.

use std::hash::{Hash, Hasher};

use busline_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// What happened to a user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UserEvent {
    Registered { email: String, password_hash: u64 },
    EmailChanged { from: String, to: String },
    PasswordChanged { password_hash: u64 },
}

impl DomainEvent for UserEvent {
    const TYPES: &'static [&'static str] = &["Registered", "EmailChanged", "PasswordChanged"];
}

/// What callers ask of a user.
#[derive(Debug, Clone)]
pub enum UserCommand {
    Register { email: String, password: String },
    ChangeEmail { email: String },
    ChangePassword { old: String, new: String },
}

/// Why a command was rejected.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum UserError {
    #[error("user is already registered")]
    AlreadyRegistered,
    #[error("user is not registered")]
    NotRegistered,
    #[error("invalid email {0:?}")]
    InvalidEmail(String),
    #[error("wrong password")]
    WrongPassword,
    #[error("password must have at least 8 characters")]
    WeakPassword,
}

/// The state of a user.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub email: Option<String>,
    pub password_hash: u64,
    pub password_changes: u32,
}

/// A stand-in for a real password hash (use argon2 in an application).
pub fn hash(password: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    ("busline-example-salt", password).hash(&mut h);
    h.finish()
}

fn check_email(email: &str) -> Result<(), UserError> {
    match email.split_once('@') {
        Some((a, b)) if !a.is_empty() && b.contains('.') => Ok(()),
        _ => Err(UserError::InvalidEmail(email.to_owned())),
    }
}

impl Aggregate for User {
    const TYPE: &'static str = "user";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;

    fn handle(&self, command: UserCommand) -> Result<Vec<UserEvent>, UserError> {
        match (command, &self.email) {
            (UserCommand::Register { .. }, Some(_)) => Err(UserError::AlreadyRegistered),
            (UserCommand::Register { email, password }, None) => {
                check_email(&email)?;
                if password.len() < 8 {
                    return Err(UserError::WeakPassword);
                }
                Ok(vec![UserEvent::Registered {
                    email,
                    password_hash: hash(&password),
                }])
            }
            (_, None) => Err(UserError::NotRegistered),
            (UserCommand::ChangeEmail { email }, Some(current)) => {
                check_email(&email)?;
                if &email == current {
                    return Ok(vec![]);
                }
                Ok(vec![UserEvent::EmailChanged {
                    from: current.clone(),
                    to: email,
                }])
            }
            (UserCommand::ChangePassword { old, new }, Some(_)) => {
                if hash(&old) != self.password_hash {
                    return Err(UserError::WrongPassword);
                }
                if new.len() < 8 {
                    return Err(UserError::WeakPassword);
                }
                Ok(vec![UserEvent::PasswordChanged {
                    password_hash: hash(&new),
                }])
            }
        }
    }

    fn apply(&mut self, event: &UserEvent) {
        match event {
            UserEvent::Registered {
                email,
                password_hash,
            } => {
                self.email = Some(email.clone());
                self.password_hash = *password_hash;
            }
            UserEvent::EmailChanged { to, .. } => self.email = Some(to.clone()),
            UserEvent::PasswordChanged { password_hash } => {
                self.password_hash = *password_hash;
                self.password_changes += 1;
            }
        }
    }
}
