//! RFC 8941 structured fields, the subset HTTP message signatures need.
//!
//! A strict parser/serializer for RFC 8941 dictionaries: members are items or inner lists;
//! bare items are integers, strings, tokens, booleans and byte sequences (decimals are refused).
//! Stricter than RFC 8941 where leniency would only help an attacker: duplicate dictionary keys
//! or parameter names fail (RFC 8941 keeps the last), byte sequences must be canonical padded
//! standard base64, and sizes are bounded. Never recursive, never panics.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// RFC 8941 integers have at most 15 digits.
pub(super) const MAX_INTEGER: u64 = 999_999_999_999_999;
const MAX_MEMBERS: usize = 64;
const MAX_PARAMS: usize = 64;
const MAX_ITEMS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Bare {
    Integer(i64),
    String(String),
    Token(String),
    Boolean(bool),
    Bytes(Vec<u8>),
}

pub(super) type Params = Vec<(String, Bare)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Item {
    pub(super) bare: Bare,
    pub(super) params: Params,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct InnerList {
    pub(super) items: Vec<Item>,
    pub(super) params: Params,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Member {
    Item(Item),
    InnerList(InnerList),
}

/// Why parsing failed (static text, for debug logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ParseError(pub(super) &'static str);

type Result<T> = std::result::Result<T, ParseError>;

/// RFC 9110 tchar.
pub(super) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// An RFC 8941 key: `( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" )`.
pub(super) fn is_key(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'*')
        && bytes.all(is_key_char)
}

fn is_key_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.' | b'*')
}

/// Parse a dictionary (RFC 8941 §4.2.2).
pub(super) fn parse_dictionary(input: &str) -> Result<Vec<(String, Member)>> {
    let mut p = Parser {
        input: input.as_bytes(),
        pos: 0,
    };
    p.skip_sp();
    let mut dict: Vec<(String, Member)> = Vec::new();
    while p.peek().is_some() {
        let key = p.key()?;
        let member = if p.eat(b'=') {
            p.member_value()?
        } else {
            Member::Item(Item {
                bare: Bare::Boolean(true),
                params: p.params()?,
            })
        };
        if dict.iter().any(|(k, _)| *k == key) {
            return Err(ParseError("duplicate dictionary key"));
        }
        if dict.len() == MAX_MEMBERS {
            return Err(ParseError("too many dictionary members"));
        }
        dict.push((key, member));
        p.skip_ows();
        if p.peek().is_none() {
            break;
        }
        if !p.eat(b',') {
            return Err(ParseError("dictionary member not followed by a comma"));
        }
        p.skip_ows();
        if p.peek().is_none() {
            return Err(ParseError("trailing comma in dictionary"));
        }
    }
    Ok(dict)
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn eat(&mut self, want: u8) -> bool {
        let hit = self.peek() == Some(want);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn skip_sp(&mut self) {
        while self.eat(b' ') {}
    }

    fn skip_ows(&mut self) {
        while self.eat(b' ') || self.eat(b'\t') {}
    }

    /// ASCII text of `input[start..self.pos]` (all accepted bytes are ASCII).
    fn text_from(&self, start: usize) -> String {
        self.input
            .get(start..self.pos)
            .unwrap_or_default()
            .iter()
            .map(|&b| char::from(b))
            .collect()
    }

    fn key(&mut self) -> Result<String> {
        let start = self.pos;
        match self.bump() {
            Some(b) if b.is_ascii_lowercase() || b == b'*' => {}
            _ => return Err(ParseError("invalid key")),
        }
        while self.peek().is_some_and(is_key_char) {
            self.pos += 1;
        }
        Ok(self.text_from(start))
    }

    fn member_value(&mut self) -> Result<Member> {
        if self.peek() == Some(b'(') {
            return Ok(Member::InnerList(self.inner_list()?));
        }
        let bare = self.bare()?;
        Ok(Member::Item(Item {
            bare,
            params: self.params()?,
        }))
    }

    /// RFC 8941 §4.2.1.2.
    fn inner_list(&mut self) -> Result<InnerList> {
        if !self.eat(b'(') {
            return Err(ParseError("expected an inner list"));
        }
        let mut items = Vec::new();
        loop {
            self.skip_sp();
            if self.eat(b')') {
                return Ok(InnerList {
                    items,
                    params: self.params()?,
                });
            }
            if items.len() == MAX_ITEMS {
                return Err(ParseError("too many inner list items"));
            }
            let bare = self.bare()?;
            items.push(Item {
                bare,
                params: self.params()?,
            });
            if !matches!(self.peek(), Some(b' ' | b')')) {
                return Err(ParseError("inner list item not followed by SP or )"));
            }
        }
    }

    /// RFC 8941 §4.2.3.2; duplicate names fail.
    fn params(&mut self) -> Result<Params> {
        let mut params: Params = Vec::new();
        while self.eat(b';') {
            self.skip_sp();
            let key = self.key()?;
            let value = if self.eat(b'=') {
                self.bare()?
            } else {
                Bare::Boolean(true)
            };
            if params.iter().any(|(k, _)| *k == key) {
                return Err(ParseError("duplicate parameter"));
            }
            if params.len() == MAX_PARAMS {
                return Err(ParseError("too many parameters"));
            }
            params.push((key, value));
        }
        Ok(params)
    }

    fn bare(&mut self) -> Result<Bare> {
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => self.integer(),
            Some(b'"') => self.string(),
            Some(b':') => self.bytes(),
            Some(b'?') => self.boolean(),
            Some(b) if b.is_ascii_alphabetic() || b == b'*' => Ok(self.token()),
            _ => Err(ParseError("invalid bare item")),
        }
    }

    /// Integers only: a decimal point fails (decimals are not supported).
    fn integer(&mut self) -> Result<Bare> {
        let negative = self.eat(b'-');
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        let digits = self.input.get(start..self.pos).unwrap_or_default();
        if digits.is_empty() || digits.len() > 15 {
            return Err(ParseError("integer must have 1 to 15 digits"));
        }
        if self.peek() == Some(b'.') {
            return Err(ParseError("decimals are not supported"));
        }
        let value = digits
            .iter()
            .fold(0i64, |acc, &d| acc * 10 + i64::from(d - b'0'));
        Ok(Bare::Integer(if negative { -value } else { value }))
    }

    fn string(&mut self) -> Result<Bare> {
        self.bump(); // the opening quote
        let mut out = String::new();
        loop {
            match self.bump() {
                Some(b'"') => return Ok(Bare::String(out)),
                Some(b'\\') => match self.bump() {
                    Some(c @ (b'"' | b'\\')) => out.push(char::from(c)),
                    _ => return Err(ParseError("invalid string escape")),
                },
                Some(c @ 0x20..=0x7e) => out.push(char::from(c)),
                _ => return Err(ParseError("invalid or unterminated string")),
            }
        }
    }

    fn token(&mut self) -> Bare {
        let start = self.pos;
        self.pos += 1; // first character checked by `bare`
        while self
            .peek()
            .is_some_and(|b| is_tchar(b) || b == b':' || b == b'/')
        {
            self.pos += 1;
        }
        Bare::Token(self.text_from(start))
    }

    /// `:base64:` with the standard alphabet and canonical padding.
    fn bytes(&mut self) -> Result<Bare> {
        self.bump(); // the opening colon
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        {
            self.pos += 1;
        }
        let encoded = self.input.get(start..self.pos).unwrap_or_default();
        if !self.eat(b':') {
            return Err(ParseError("invalid or unterminated byte sequence"));
        }
        STANDARD
            .decode(encoded)
            .map(Bare::Bytes)
            .map_err(|_| ParseError("byte sequence is not canonical padded base64"))
    }

    fn boolean(&mut self) -> Result<Bare> {
        self.bump(); // the question mark
        match self.bump() {
            Some(b'0') => Ok(Bare::Boolean(false)),
            Some(b'1') => Ok(Bare::Boolean(true)),
            _ => Err(ParseError("invalid boolean")),
        }
    }
}

/// RFC 8941 §4.1.1.1 serialization of an inner list with its parameters.
pub(super) fn serialize_inner_list(list: &InnerList) -> String {
    let mut out = String::from("(");
    for (i, item) in list.items.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        write_bare(&mut out, &item.bare);
        write_params(&mut out, &item.params);
    }
    out.push(')');
    write_params(&mut out, &list.params);
    out
}

fn write_params(out: &mut String, params: &Params) {
    for (key, value) in params {
        out.push(';');
        out.push_str(key);
        if *value != Bare::Boolean(true) {
            out.push('=');
            write_bare(out, value);
        }
    }
}

fn write_bare(out: &mut String, bare: &Bare) {
    match bare {
        Bare::Integer(i) => out.push_str(&i.to_string()),
        Bare::String(s) => {
            out.push('"');
            for c in s.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
        Bare::Token(t) => out.push_str(t),
        Bare::Boolean(b) => out.push_str(if *b { "?1" } else { "?0" }),
        Bare::Bytes(b) => {
            out.push(':');
            out.push_str(&STANDARD.encode(b));
            out.push(':');
        }
    }
}
