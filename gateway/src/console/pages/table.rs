//! The main page's mailbox table as data: which rows, in which order, and what each row may
//! offer. Kept apart from the handlers so sorting, filtering and the action rules are tested
//! without HTTP.

use serde::{Deserialize, Serialize};

use crate::service::MailboxInfo;
use crate::store::MailboxStatus;

/// A column the table can be sorted by (`?sort=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Column {
    Address,
    #[default]
    Name,
    Description,
    Status,
    Messages,
    Size,
    Oldest,
}

impl Column {
    pub const ALL: [Column; 7] = [
        Column::Address,
        Column::Name,
        Column::Description,
        Column::Status,
        Column::Messages,
        Column::Size,
        Column::Oldest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Column::Address => "address",
            Column::Name => "name",
            Column::Description => "description",
            Column::Status => "status",
            Column::Messages => "messages",
            Column::Size => "size",
            Column::Oldest => "oldest",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

/// `?order=asc|desc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    Asc,
    Desc,
}

impl Order {
    pub fn as_str(self) -> &'static str {
        match self {
            Order::Asc => "asc",
            Order::Desc => "desc",
        }
    }

    pub fn reversed(self) -> Self {
        match self {
            Order::Asc => Order::Desc,
            Order::Desc => Order::Asc,
        }
    }
}

/// The main page's query string as the browser sends it; anything unknown falls back to the
/// default rather than failing, since a stale bookmark should still show the table.
#[derive(Debug, Default, Deserialize)]
pub struct RawQuery {
    pub sort: Option<String>,
    pub order: Option<String>,
    pub q: Option<String>,
    pub notice: Option<String>,
}

/// How the table is shown: sorted by `sort` in `order`, only rows matching `filter`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct View {
    pub sort: Column,
    pub order: Order,
    pub filter: String,
}

/// Filters longer than this are cut: nobody types more, and it bounds the work per row.
const MAX_FILTER: usize = 200;

impl View {
    pub fn from_query(query: &RawQuery) -> Self {
        let sort = query
            .sort
            .as_deref()
            .and_then(Column::parse)
            .unwrap_or_default();
        let order = match query.order.as_deref() {
            Some("desc") => Order::Desc,
            _ => Order::Asc,
        };
        let filter = query
            .q
            .as_deref()
            .unwrap_or("")
            .trim()
            .chars()
            .take(MAX_FILTER)
            .collect();
        Self {
            sort,
            order,
            filter,
        }
    }

    /// The rows to show, in order.
    pub fn apply(&self, mut list: Vec<MailboxInfo>) -> Vec<MailboxInfo> {
        let needle = self.filter.to_lowercase();
        if !needle.is_empty() {
            list.retain(|m| matches(m, &needle));
        }
        list.sort_by(|a, b| {
            let ordering = compare(self.sort, a, b);
            let ordering = match self.order {
                Order::Asc => ordering,
                Order::Desc => ordering.reverse(),
            };
            // Ties by name, then id, both ascending: the order is stable between reloads.
            ordering
                .then_with(|| a.name.to_lowercase().cmp(&b.name.to_lowercase()))
                .then_with(|| a.id.cmp(&b.id))
        });
        list
    }

    /// The query string that sorts by `column`: the other direction when it already sorts
    /// by it, ascending otherwise; the filter is kept.
    pub fn sort_link(&self, column: Column) -> String {
        let order = if self.sort == column {
            self.order.reversed()
        } else {
            Order::Asc
        };
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("sort", column.as_str());
        query.append_pair("order", order.as_str());
        if !self.filter.is_empty() {
            query.append_pair("q", &self.filter);
        }
        format!("?{}", query.finish())
    }
}

/// Whether a mailbox matches the (lower-case) filter text: id, address, name or description
/// contain it, or it names the status.
fn matches(mailbox: &MailboxInfo, needle: &str) -> bool {
    [
        mailbox.id.as_str(),
        mailbox.address.as_str(),
        mailbox.name.as_str(),
        mailbox.description.as_str(),
    ]
    .iter()
    .any(|field| field.to_lowercase().contains(needle))
        || mailbox.status.to_string() == needle
}

fn compare(column: Column, a: &MailboxInfo, b: &MailboxInfo) -> std::cmp::Ordering {
    match column {
        Column::Address => a.address.cmp(&b.address),
        Column::Name => a.name.to_lowercase().cmp(&b.name.to_lowercase()),
        Column::Description => a
            .description
            .to_lowercase()
            .cmp(&b.description.to_lowercase()),
        Column::Status => a.status.to_string().cmp(&b.status.to_string()),
        Column::Messages => a.message_count.cmp(&b.message_count),
        Column::Size => a.message_bytes.cmp(&b.message_bytes),
        // Empty mailboxes (no oldest message) sort after every non-empty one.
        Column::Oldest => match (a.oldest_message_at, b.oldest_message_at) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        },
    }
}

/// Why delete and reset are not offered for a mailbox (the service's rule, shown in advance;
/// the service still enforces it when the action is posted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    NotSuspended,
    NotEmpty,
}

impl Blocked {
    /// The catalogue key of the reason.
    pub fn message_key(self) -> &'static str {
        match self {
            Blocked::NotSuspended => "mailbox-blocked-not-suspended",
            Blocked::NotEmpty => "mailbox-blocked-not-empty",
        }
    }
}

/// Why delete and reset may not be offered yet (every reason that applies, so the
/// administrator sees all steps at once); empty when they may.
pub fn blocked(mailbox: &MailboxInfo) -> Vec<Blocked> {
    let mut reasons = Vec::new();
    if mailbox.status != MailboxStatus::Suspended {
        reasons.push(Blocked::NotSuspended);
    }
    if mailbox.message_count > 0 {
        reasons.push(Blocked::NotEmpty);
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::MailboxId;

    fn mailbox(name: &str, status: MailboxStatus, count: u64, oldest: Option<u64>) -> MailboxInfo {
        let id = MailboxId::generate();
        MailboxInfo {
            address: format!("{}@archive.example", id.as_str()),
            id,
            name: name.to_owned(),
            description: format!("about {name}"),
            status,
            created_at: 0,
            message_count: count,
            message_bytes: count * 1000,
            oldest_message_at: oldest,
        }
    }

    fn names(list: &[MailboxInfo]) -> Vec<&str> {
        list.iter().map(|m| m.name.as_str()).collect()
    }

    fn view(sort: &str, order: &str, q: &str) -> View {
        View::from_query(&RawQuery {
            sort: Some(sort.into()),
            order: Some(order.into()),
            q: Some(q.into()),
            notice: None,
        })
    }

    fn sample() -> Vec<MailboxInfo> {
        vec![
            mailbox("beta", MailboxStatus::Active, 5, Some(300)),
            mailbox("Alpha", MailboxStatus::Suspended, 0, None),
            mailbox("gamma", MailboxStatus::Active, 1, Some(100)),
        ]
    }

    #[test]
    fn sorts_by_each_column_both_ways() {
        assert_eq!(
            names(&view("name", "asc", "").apply(sample())),
            ["Alpha", "beta", "gamma"]
        );
        assert_eq!(
            names(&view("name", "desc", "").apply(sample())),
            ["gamma", "beta", "Alpha"]
        );
        assert_eq!(
            names(&view("messages", "desc", "").apply(sample())),
            ["beta", "gamma", "Alpha"]
        );
        assert_eq!(
            names(&view("size", "asc", "").apply(sample())),
            ["Alpha", "gamma", "beta"]
        );
        assert_eq!(
            names(&view("oldest", "asc", "").apply(sample())),
            ["gamma", "beta", "Alpha"]
        );
        assert_eq!(
            names(&view("status", "desc", "").apply(sample())),
            ["Alpha", "beta", "gamma"]
        );
    }

    #[test]
    fn filters_on_text_and_status_and_ignores_case() {
        assert_eq!(
            names(&view("name", "asc", "GAM").apply(sample())),
            ["gamma"]
        );
        assert_eq!(
            names(&view("name", "asc", "suspended").apply(sample())),
            ["Alpha"]
        );
        assert_eq!(
            names(&view("name", "asc", "about b").apply(sample())),
            ["beta"]
        );
        assert!(view("name", "asc", "nothing like it")
            .apply(sample())
            .is_empty());
    }

    #[test]
    fn unknown_query_values_fall_back_to_the_default_view() {
        let v = View::from_query(&RawQuery {
            sort: Some("password".into()),
            order: Some("sideways".into()),
            q: Some(" x ".repeat(500)),
            notice: None,
        });
        assert_eq!(v.sort, Column::Name);
        assert_eq!(v.order, Order::Asc);
        assert!(v.filter.chars().count() <= MAX_FILTER);
    }

    #[test]
    fn sort_links_toggle_the_current_column_and_keep_the_filter() {
        let v = view("name", "asc", "a&b");
        assert_eq!(v.sort_link(Column::Name), "?sort=name&order=desc&q=a%26b");
        assert_eq!(v.sort_link(Column::Size), "?sort=size&order=asc&q=a%26b");
    }

    #[test]
    fn delete_and_reset_need_a_suspended_empty_mailbox() {
        let s = sample();
        assert_eq!(blocked(&s[0]), [Blocked::NotSuspended, Blocked::NotEmpty]);
        assert!(blocked(&s[1]).is_empty());
        assert_eq!(blocked(&s[2]), [Blocked::NotSuspended, Blocked::NotEmpty]);
        let full = mailbox("x", MailboxStatus::Suspended, 2, Some(1));
        assert_eq!(blocked(&full), [Blocked::NotEmpty]);
        let idle = mailbox("y", MailboxStatus::Active, 0, None);
        assert_eq!(blocked(&idle), [Blocked::NotSuspended]);
    }
}
