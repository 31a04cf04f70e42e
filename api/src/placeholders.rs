//! SQL parameter placeholders for statements whose length is known only at run time (`IN (…)` lists,
//! multi-row `VALUES`): the one place the api writes them.
//!
//! Both drivers take numbered `$n` placeholders, which a statement with fixed parameters before the
//! list needs. SQLite also takes anonymous `?` ones, bound in order of appearance; it looks numbered
//! ones up in a list while parsing, which is quadratic in their number and costs tens of milliseconds
//! for a batch of 500 usage events, so bulk inserts that start at the first parameter use [`Style::for_backend`].

/// How placeholders are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `$1, $2, …`: both backends.
    Numbered,
    /// `?, ?, …`: SQLite only; every parameter of the statement must be anonymous and bound in order.
    Anonymous,
}

impl Style {
    /// The cheapest style for a statement whose parameters are all written by this module, on the
    /// backend `sqlx` names (`AnyConnection::backend_name`).
    pub fn for_backend(backend_name: &str) -> Style {
        if backend_name == "SQLite" {
            Style::Anonymous
        } else {
            Style::Numbered
        }
    }
}

fn push_one(sql: &mut String, style: Style, number: usize) {
    match style {
        Style::Numbered => {
            sql.push('$');
            sql.push_str(&number.to_string());
        }
        Style::Anonymous => sql.push('?'),
    }
}

/// Appends `count` placeholders numbered from `$first`, separated by commas: `$1, $2, $3`.
pub fn list(sql: &mut String, style: Style, first: usize, count: usize) {
    for i in 0..count {
        if i > 0 {
            sql.push_str(", ");
        }
        push_one(sql, style, first + i);
    }
}

/// Appends `rows` parenthesised rows of `columns` placeholders numbered from `$1`, separated by
/// commas: `($1, $2), ($3, $4)` for two rows of two, the VALUES list of a multi-row INSERT.
pub fn rows(sql: &mut String, style: Style, rows: usize, columns: usize) {
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        list(sql, style, 1 + row * columns, columns);
        sql.push(')');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_rows() {
        let mut sql = String::from("IN (");
        list(&mut sql, Style::Numbered, 3, 3);
        sql.push(')');
        assert_eq!(sql, "IN ($3, $4, $5)");
        let mut sql = String::new();
        rows(&mut sql, Style::Numbered, 2, 2);
        assert_eq!(sql, "($1, $2), ($3, $4)");
        let mut sql = String::new();
        rows(&mut sql, Style::Anonymous, 2, 3);
        assert_eq!(sql, "(?, ?, ?), (?, ?, ?)");
        let mut sql = String::new();
        list(&mut sql, Style::Numbered, 1, 0);
        rows(&mut sql, Style::Anonymous, 0, 4);
        assert_eq!(sql, "");
        assert_eq!(Style::for_backend("SQLite"), Style::Anonymous);
        assert_eq!(Style::for_backend("PostgreSQL"), Style::Numbered);
    }
}
