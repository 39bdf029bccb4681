//! Phone numbers are personal data: logs show them masked.

/// Masks a phone number, or the user part of a SIP/tel URI that holds one:
/// the first five characters and the last two digits stay, so operators can
/// still tell calls apart (`+14155550100` → `+1415*****00`).
pub fn mask_phone(value: &str) -> String {
    let (prefix, rest) = match value.find(':') {
        Some(i) if value[..i].chars().all(|c| c.is_ascii_alphabetic()) => value.split_at(i + 1),
        _ => ("", value),
    };
    let user_end = rest.find(['@', ';', '>']).unwrap_or(rest.len());
    let (user, tail) = rest.split_at(user_end);
    let digits = user.chars().filter(|c| c.is_ascii_digit()).count();
    if digits < 5 {
        return value.to_string();
    }
    let keep_head = 5.min(user.len());
    let chars: Vec<char> = user.chars().collect();
    let masked: String = chars
        .iter()
        .enumerate()
        .map(|(i, &c)| if i < keep_head || i + 2 >= chars.len() || !c.is_ascii_digit() { c } else { '*' })
        .collect();
    format!("{prefix}{masked}{tail}")
}

#[cfg(test)]
mod tests {
    use super::mask_phone;

    #[test]
    fn masks_numbers_and_uri_users_only() {
        assert_eq!(mask_phone("+14155550100"), "+1415*****00");
        assert_eq!(mask_phone("sip:+14155550100@trunk.example.com:5060"), "sip:+1415*****00@trunk.example.com:5060");
        assert_eq!(mask_phone("tel:+442071234567;phone-context=x"), "tel:+4420******67;phone-context=x");
        assert_eq!(mask_phone("sip:alice@example.com"), "sip:alice@example.com");
        assert_eq!(mask_phone("sip:1234@host"), "sip:1234@host");
    }
}
