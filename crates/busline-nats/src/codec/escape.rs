//! Escaping of `Busline` header values, and the checks on free-form
//! headers that travel as they are.

/// Why a free-form header cannot travel as a NATS header, if it cannot.
/// `msg_id`: the message carries `Nats-Msg-Id` (JetStream), which the
/// server finds by the first place its name appears in the header block.
pub(super) fn header_problem(name: &str, value: &str, msg_id: bool) -> Option<&'static str> {
    if name.is_empty() || name.bytes().any(|b| b == b':' || !(33..=126).contains(&b)) {
        return Some("a name needs printable ascii without `:` or spaces");
    }
    if value.contains(['\r', '\n']) {
        return Some("a value cannot hold a line break");
    }
    if value.starts_with([' ', '\t']) || value.ends_with([' ', '\t']) {
        return Some("a value cannot start or end with a space or tab (NATS trims them)");
    }
    if msg_id && (name.contains(MSG_ID_TEXT) || value.contains(MSG_ID_TEXT)) {
        return Some("it holds the text `Nats-Msg-Id`, which would hide the message id from JetStream's de-duplication");
    }
    None
}

/// The text the server looks for to find a message's id.
pub(super) const MSG_ID_TEXT: &str = "Nats-Msg-Id";

/// Appends `v` percent-escaped for a `Busline` header field: `%`, `;`,
/// `=`, `,`, CR, LF; a space or tab at either end (NATS trims them); and
/// the `N` of `Nats-Msg-Id` (the server finds the message id by the first
/// place that text appears in the header block).
pub(super) fn escape_into(out: &mut String, v: &str) {
    let edge = |c: char| c == ' ' || c == '\t';
    if !v.contains(['%', ';', '=', ',', '\r', '\n'])
        && !v.starts_with(edge)
        && !v.ends_with(edge)
        && !v.contains(MSG_ID_TEXT)
    {
        out.push_str(v);
        return;
    }
    let last = v.char_indices().last().map_or(0, |(i, _)| i);
    for (i, c) in v.char_indices() {
        match c {
            '%' => out.push_str("%25"),
            ';' => out.push_str("%3B"),
            '=' => out.push_str("%3D"),
            ',' => out.push_str("%2C"),
            '\r' => out.push_str("%0D"),
            '\n' => out.push_str("%0A"),
            ' ' if i == 0 || i == last => out.push_str("%20"),
            '\t' if i == 0 || i == last => out.push_str("%09"),
            'N' if v[i..].starts_with(MSG_ID_TEXT) => out.push_str("%4E"),
            c => out.push(c),
        }
    }
}

pub(super) fn unescape(v: &str) -> Option<String> {
    if !v.contains('%') {
        return Some(v.to_string());
    }
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
