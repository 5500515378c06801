//! Checks generated Snowflake statements that no stand-in runs and no parser knows.
//!
//! fakesnow (DuckDB) executes neither streams, tasks, tags nor masking and row access
//! policies, and sqlparser's Snowflake dialect has no grammar for them (neither has sqlglot).
//! [`check`] therefore reads a statement against the form Snowflake documents for it, written
//! as a pattern, with sqlparser's Snowflake dialect doing the real work: every name, data type,
//! expression, string literal and `$$` block in the statement is parsed by it, so a syntax
//! error in what Strata generates fails a test. The patterns cover the forms Strata writes,
//! not all of Snowflake's options.
//!
//! Pattern pieces (separated by spaces):
//!
//! | piece | matches |
//! |---|---|
//! | `WORD` (upper case) | that keyword or word |
//! | `(` `)` `=` `->` `,` `;` | that token |
//! | `{name}` | an object name (`DB.SCHEMA.T`, quoted or not) |
//! | `{ident}` | one identifier |
//! | `{idents}` | identifiers separated by commas |
//! | `{type}` | a data type |
//! | `{expr}` | an expression |
//! | `{string}` / `{strings}` | one string literal / several separated by commas |
//! | `{block}` | a `$$`-quoted text that parses as Snowflake statements (a task body) |
//! | `{statement}` | a whole statement (the rest of the text) |
//!
//! ```
//! use stratalake_testkit::snowflake_sql::check;
//! check(
//!     "CREATE STREAM IF NOT EXISTS ORDERS_STREAM ON TABLE ORDERS",
//!     "CREATE STREAM IF NOT EXISTS {name} ON TABLE {name}",
//! )
//! .unwrap();
//! assert!(check("CREATE STREAM ORDERS_STREAM ON ORDERS", "CREATE STREAM {name} ON TABLE {name}").is_err());
//! ```

use sqlparser::dialect::SnowflakeDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;

/// Check `sql` against `pattern` (see the module docs); the error says what was expected
/// where.
///
/// # Errors
/// A message naming the pattern piece that did not match and sqlparser's error.
pub fn check(sql: &str, pattern: &str) -> Result<(), String> {
    let d = SnowflakeDialect {};
    let mut p = Parser::new(&d)
        .try_with_sql(sql)
        .map_err(|e| format!("{sql}: cannot tokenize: {e}"))?;
    let at = |piece: &str, e: &dyn std::fmt::Display| format!("{sql}\n  at `{piece}`: {e}");
    for piece in pattern.split_whitespace() {
        match piece {
            "{name}" => {
                p.parse_object_name(false).map_err(|e| at(piece, &e))?;
            }
            "{ident}" => {
                p.parse_identifier().map_err(|e| at(piece, &e))?;
            }
            "{idents}" => {
                p.parse_comma_separated(Parser::parse_identifier)
                    .map_err(|e| at(piece, &e))?;
            }
            "{type}" => {
                p.parse_data_type().map_err(|e| at(piece, &e))?;
            }
            "{expr}" => {
                p.parse_expr().map_err(|e| at(piece, &e))?;
            }
            "{string}" => {
                p.parse_literal_string().map_err(|e| at(piece, &e))?;
            }
            "{strings}" => {
                p.parse_comma_separated(Parser::parse_literal_string)
                    .map_err(|e| at(piece, &e))?;
            }
            "{statement}" => {
                p.parse_statement().map_err(|e| at(piece, &e))?;
            }
            "{block}" => match p.next_token().token {
                Token::DollarQuotedString(s) => {
                    let stmts = Parser::parse_sql(&d, &s.value).map_err(|e| at(piece, &e))?;
                    if stmts.is_empty() {
                        return Err(at(piece, &"the block holds no statement"));
                    }
                }
                other => return Err(at(piece, &format!("found {other}"))),
            },
            "(" | ")" | "=" | "->" | "," | ";" => {
                let want = match piece {
                    "(" => Token::LParen,
                    ")" => Token::RParen,
                    "=" => Token::Eq,
                    "->" => Token::Arrow,
                    "," => Token::Comma,
                    _ => Token::SemiColon,
                };
                p.expect_token(&want).map_err(|e| at(piece, &e))?;
            }
            word => match p.next_token().token {
                Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word) => {
                }
                other => return Err(at(piece, &format!("found {other}"))),
            },
        }
    }
    let _ = p.consume_token(&Token::SemiColon);
    match p.peek_token().token {
        Token::EOF => Ok(()),
        other => Err(at("the end", &format!("found {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn forms_match_and_errors_name_the_place() {
        check(
            "CREATE OR REPLACE MASKING POLICY M AS (val VARCHAR) RETURNS VARCHAR -> CASE WHEN IS_ROLE_IN_SESSION('A') THEN val ELSE SHA2(val) END",
            "CREATE OR REPLACE MASKING POLICY {name} AS ( {ident} {type} ) RETURNS {type} -> {expr}",
        )
        .unwrap();
        let e = check(
            "CREATE OR REPLACE MASKING POLICY M AS (val VARCHAR RETURNS VARCHAR -> val",
            "CREATE OR REPLACE MASKING POLICY {name} AS ( {ident} {type} ) RETURNS {type} -> {expr}",
        )
        .unwrap_err();
        assert!(e.contains("at `)`"), "{e}");
        assert!(
            check(
                "CREATE OR REPLACE MASKING POLICY M AS (val VARCHAR) RETURNS VARCHAR -> CASE WHEN THEN val END",
                "CREATE OR REPLACE MASKING POLICY {name} AS ( {ident} {type} ) RETURNS {type} -> {expr}",
            )
            .is_err()
        );
        let e = check("ALTER TASK T RESUME EXTRA", "ALTER TASK {name} RESUME").unwrap_err();
        assert!(e.contains("the end"), "{e}");
        check(
            "CREATE TASK T AS EXECUTE IMMEDIATE $$\nBEGIN\n  SELECT 1;\nEND;\n$$",
            "CREATE TASK {name} AS EXECUTE IMMEDIATE {block}",
        )
        .unwrap();
        assert!(
            check(
                "CREATE TASK T AS EXECUTE IMMEDIATE $$\nBEGIN\n  SELEC 1;\nEND;\n$$",
                "CREATE TASK {name} AS EXECUTE IMMEDIATE {block}",
            )
            .is_err()
        );
    }
}
