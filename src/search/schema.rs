//! The index schema and the analysis fit for legal data.
//!
//! Every analyzer composes text first (Unicode NFC), so a name typed with
//! combining accents (`Mu\u{308}ller`, as macOS and some imports send it) is
//! the same word as its precomposed form, then folds case and accents.
//! Text is analysed twice: `names`/`body` keep words exact (case and accents
//! folded), `names_stem`/`body_stem` also stem them (English), so a query
//! matches both ways and the exact match scores higher. Codes (matter and bill
//! numbers) keep the whole code and each of its parts (`00042-Smith` is found
//! by `00042-smith`, `00042`, `42`, `smith` and by prefix); emails keep the
//! whole address and its parts; phone numbers keep their digits only, without
//! a leading `1` country code, so every way of writing one matches.
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, Stemmer, TextAnalyzer, Token, TokenStream, Tokenizer,
};
use unicode_normalization::UnicodeNormalization as _;
use unicode_normalization::char::is_combining_mark;

/// The index format this binary writes; an index of another format is rebuilt.
/// 2: phone numbers of 10+ digits are also indexed by their 7-digit local number.
/// 3: text is composed (NFC) before it is split into words and folded.
pub const FORMAT: u32 = 3;

pub const TEXT: &str = "docket_text";
pub const STEM: &str = "docket_stem";
pub const CODE: &str = "docket_code";
pub const PHONE: &str = "docket_phone";

/// Words longer than this are not indexed (they are not words).
const LONGEST_WORD: usize = 64;

/// The fields of a document.
#[derive(Clone, Copy, Debug)]
pub struct Fields {
    /// `kind:id`, the document identity (delete-then-add on every change).
    pub key: Field,
    /// A 64-bit hash of `key`: the tie-breaker of the sort order (fast).
    pub uid: Field,
    pub kind: Field,
    pub id: Field,
    /// The matters the record belongs to (itself for a matter): walls and `matter_id`.
    pub matters: Field,
    pub title: Field,
    pub subtitle: Field,
    pub names: Field,
    pub names_stem: Field,
    pub body: Field,
    pub body_stem: Field,
    pub number: Field,
    pub email: Field,
    pub phone: Field,
    pub client: Field,
    pub status: Field,
    pub practice_area: Field,
    pub attorney: Field,
    pub client_id: Field,
    pub billed: Field,
    /// The kind's main date, microseconds since the epoch (fast, for sort and ranges).
    pub date: Field,
    /// For suggestions: matters, contacts and users carry `1`.
    pub suggest: Field,
}

fn text(analyzer: &str, stored: bool) -> TextOptions {
    let indexing =
        TextFieldIndexing::default().set_tokenizer(analyzer).set_index_option(IndexRecordOption::WithFreqsAndPositions);
    let options = TextOptions::default().set_indexing_options(indexing);
    if stored { options.set_stored() } else { options }
}

impl Fields {
    /// The schema and its fields.
    pub fn schema() -> (Schema, Fields) {
        let mut b = Schema::builder();
        let facet = STRING | FAST;
        let fields = Fields {
            key: b.add_text_field("key", STRING | STORED),
            uid: b.add_u64_field("uid", FAST),
            kind: b.add_text_field("kind", facet.clone() | STORED),
            id: b.add_text_field("id", STRING | STORED),
            matters: b.add_text_field("matters", STRING | STORED),
            title: b.add_text_field("title", STORED),
            subtitle: b.add_text_field("subtitle", STORED),
            names: b.add_text_field("names", text(TEXT, false)),
            names_stem: b.add_text_field("names_stem", text(STEM, false)),
            body: b.add_text_field("body", text(TEXT, true)),
            body_stem: b.add_text_field("body_stem", text(STEM, false)),
            number: b.add_text_field("number", text(CODE, false)),
            email: b.add_text_field("email", text(CODE, false)),
            phone: b.add_text_field("phone", text(PHONE, false)),
            client: b.add_text_field("client", text(TEXT, false)),
            status: b.add_text_field("status", facet.clone()),
            practice_area: b.add_text_field("practice_area", facet.clone()),
            attorney: b.add_text_field("responsible_attorney", facet.clone()),
            client_id: b.add_text_field("client_id", STRING),
            billed: b.add_text_field("billed", facet),
            date: b.add_i64_field("date", INDEXED | FAST | STORED),
            suggest: b.add_u64_field("suggest", INDEXED),
        };
        (b.build(), fields)
    }
}

/// Registers the analyzers on an index.
pub fn register(index: &tantivy::Index) {
    let manager = index.tokenizers();
    manager.register(TEXT, text_analyzer());
    manager.register(STEM, stem_analyzer());
    manager.register(CODE, code_analyzer());
    manager.register(PHONE, TextAnalyzer::builder(PhoneTokenizer).build());
}

pub fn text_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(WordTokenizer)
        .filter(RemoveLongFilter::limit(LONGEST_WORD))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

fn stem_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(WordTokenizer)
        .filter(RemoveLongFilter::limit(LONGEST_WORD))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(Stemmer::new(Language::English))
        .build()
}

fn code_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(CodeTokenizer).filter(LowerCaser).filter(AsciiFoldingFilter).build()
}

/// The terms `text` becomes under `analyzer` (what the index holds for it).
pub fn terms(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut out = vec![];
    let mut stream = analyzer.token_stream(text);
    while let Some(token) = stream.next() {
        out.push(token.text.clone());
    }
    out
}

/// Normalises a phone number to its digits, without a leading `1` country
/// code on an 11-digit number; `None` when fewer than 7 digits remain.
pub fn phone_digits(text: &str) -> Option<String> {
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    let digits = match digits.strip_prefix('1') {
        Some(rest) if digits.len() == 11 => rest.to_string(),
        _ => digits,
    };
    (7..=15).contains(&digits.len()).then_some(digits)
}

/// Tokens made up front (the code and phone tokenizers are not streaming).
#[derive(Clone, Debug)]
pub struct Tokens {
    tokens: Vec<Token>,
    at: usize,
    none: Token,
}

impl Tokens {
    fn new(tokens: Vec<Token>) -> Tokens {
        Tokens { tokens, at: 0, none: Token::default() }
    }
}

impl TokenStream for Tokens {
    fn advance(&mut self) -> bool {
        self.at += 1;
        self.at <= self.tokens.len()
    }

    fn token(&self) -> &Token {
        self.tokens.get(self.at.wrapping_sub(1)).unwrap_or(&self.none)
    }

    fn token_mut(&mut self) -> &mut Token {
        match self.tokens.get_mut(self.at.wrapping_sub(1)) {
            Some(token) => token,
            None => &mut self.none,
        }
    }
}

fn token(text: &str, from: usize, to: usize, position: usize) -> Token {
    Token { offset_from: from, offset_to: to, position, text: text.to_string(), position_length: 1 }
}

/// Words: runs of letters and digits with the combining marks that follow
/// them, each composed (NFC). Offsets stay those of the text as given, so
/// snippets highlight the original characters.
#[derive(Clone, Copy, Debug, Default)]
pub struct WordTokenizer;

impl Tokenizer for WordTokenizer {
    type TokenStream<'a> = Tokens;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Tokens {
        let mut tokens = vec![];
        let mut start = None;
        for (at, c) in text.char_indices().chain(std::iter::once((text.len(), ' '))) {
            let in_word = c.is_alphanumeric() || (start.is_some() && is_combining_mark(c));
            match (in_word, start) {
                (true, None) => start = Some(at),
                (false, Some(from)) => {
                    let composed: String = text[from..at].nfc().collect();
                    tokens.push(token(&composed, from, at, tokens.len()));
                    start = None;
                }
                _ => {}
            }
        }
        Tokens::new(tokens)
    }
}

/// Codes and addresses: each whitespace-separated chunk as a whole, then each
/// of its alphanumeric parts, and a numeric part without its leading zeros.
#[derive(Clone, Copy, Debug, Default)]
pub struct CodeTokenizer;

impl Tokenizer for CodeTokenizer {
    type TokenStream<'a> = Tokens;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Tokens {
        let mut tokens = vec![];
        let mut position = 0;
        let mut at = 0;
        for chunk in text.split_whitespace() {
            let start = text[at..].find(chunk).map_or(at, |i| at + i);
            at = start + chunk.len();
            let chunk = chunk.trim_start_matches(|c: char| !c.is_alphanumeric());
            let chunk = chunk.trim_end_matches(|c: char| !c.is_alphanumeric() && !is_combining_mark(c));
            if chunk.is_empty() || chunk.len() > LONGEST_WORD {
                continue;
            }
            let (end, chunk) = (start + chunk.len(), chunk.nfc().collect::<String>());
            let chunk = chunk.as_str();
            let mut push = |t: &str| {
                tokens.push(token(t, start, end, position));
                position += 1;
            };
            push(chunk);
            let parts: Vec<&str> = chunk.split(|c: char| !c.is_alphanumeric()).filter(|p| !p.is_empty()).collect();
            for part in &parts {
                if parts.len() > 1 {
                    push(part);
                }
                let trimmed = part.trim_start_matches('0');
                if !trimmed.is_empty() && trimmed.len() < part.len() && part.bytes().all(|b| b.is_ascii_digit()) {
                    push(trimmed);
                }
            }
        }
        Tokens::new(tokens)
    }
}

/// Phone numbers: the normalised digits ([`phone_digits`]) and, for a number
/// of 10 digits or more, its last 7 too, so a caller who types only the
/// local number (`010-2233`) finds `(555) 010-2233`.
#[derive(Clone, Copy, Debug, Default)]
pub struct PhoneTokenizer;

impl Tokenizer for PhoneTokenizer {
    type TokenStream<'a> = Tokens;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Tokens {
        let tokens = text
            .split([',', ';', '/'])
            .filter_map(phone_digits)
            .flat_map(|d| {
                let local = (d.len() >= 10).then(|| d[d.len() - 7..].to_string());
                std::iter::once(d).chain(local)
            })
            .enumerate()
            .map(|(i, d)| token(&d, 0, text.len(), i))
            .collect();
        Tokens::new(tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> Vec<String> {
        terms(&mut code_analyzer(), text)
    }

    #[test]
    fn matter_numbers_are_found_by_either_part() {
        assert_eq!(code("00042-Smith"), ["00042-smith", "00042", "42", "smith"]);
        assert_eq!(code("B-2024/117"), ["b-2024/117", "b", "2024", "117"]);
        assert_eq!(code("1001"), ["1001"]);
        assert_eq!(code("  "), Vec::<String>::new());
    }

    #[test]
    fn emails_keep_the_address_and_its_parts() {
        assert_eq!(code("Jane.Doe@Smith-Law.com"), ["jane.doe@smith-law.com", "jane", "doe", "smith", "law", "com"]);
    }

    #[test]
    fn phones_of_every_spelling_are_one_term() {
        let mut phone = TextAnalyzer::builder(PhoneTokenizer).build();
        for spelling in ["(555) 010-2233", "555.010.2233", "+15550102233", "1-555-010-2233", "555 010 2233"] {
            assert_eq!(terms(&mut phone, spelling), ["5550102233", "0102233"], "{spelling}");
        }
        assert_eq!(terms(&mut phone, "555-5559"), ["5555559"], "a local number is one term");
        assert_eq!(terms(&mut phone, "call me"), Vec::<String>::new());
        assert_eq!(phone_digits("+44 20 7946 0958").as_deref(), Some("442079460958"));
    }

    #[test]
    fn decomposed_text_is_composed_before_it_is_folded() {
        let decomposed = "Rene\u{301}e Mu\u{308}ller";
        assert_eq!(terms(&mut text_analyzer(), decomposed), ["renee", "muller"]);
        assert_eq!(terms(&mut text_analyzer(), "Müller"), ["muller"], "the query's precomposed form: the same term");
        assert_eq!(terms(&mut stem_analyzer(), "Mu\u{308}llers"), ["muller"]);
        assert_eq!(code("Mu\u{308}ller-00042"), ["muller-00042", "muller", "00042", "42"]);
        // Offsets are those of the text as given, so snippets highlight the right characters.
        let mut analyzer = text_analyzer();
        let mut stream = analyzer.token_stream(decomposed);
        let mut spans = vec![];
        while let Some(t) = stream.next() {
            spans.push(&decomposed[t.offset_from..t.offset_to]);
        }
        assert_eq!(spans, ["Rene\u{301}e", "Mu\u{308}ller"]);
        assert_eq!(terms(&mut text_analyzer(), "\u{301}x"), ["x"], "a stray mark starts no word");
    }

    #[test]
    fn accents_and_case_fold_and_stems_stay_apart() {
        assert_eq!(terms(&mut text_analyzer(), "Renée MÜLLER's filings"), ["renee", "muller", "s", "filings"]);
        assert_eq!(terms(&mut stem_analyzer(), "filings running"), ["file", "run"]);
    }
}
