//! Word lists for realistic values. Plain ASCII with no quotes or backslashes, so records can
//! be written without escaping.

pub const FIRST_NAMES: &[&str] = &[
    "Anna", "Ben", "Clara", "David", "Emma", "Felix", "Greta", "Hugo", "Ida", "Jonas", "Karla", "Leon", "Mia", "Noah", "Olivia",
    "Paul", "Queenie", "Rafael", "Sofia", "Tom", "Ursula", "Victor", "Wanda", "Xavier", "Yara", "Zoe", "Amelie", "Bruno",
    "Chloe", "Dario", "Elif", "Farah", "Giulia", "Hassan", "Ingrid", "Jakub", "Kenji", "Lucia", "Mateo", "Nadia", "Oskar",
    "Priya", "Ravi", "Selin", "Tariq", "Valentina", "Wei", "Yusuf", "Zainab", "Aiko",
];
pub const LAST_NAMES: &[&str] = &[
    "Mueller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann", "Rossi", "Russo",
    "Ferrari", "Garcia", "Martinez", "Lopez", "Dubois", "Laurent", "Moreau", "Smith", "Johnson", "Brown", "Taylor", "Wilson",
    "Nowak", "Kowalski", "Novak", "Jansen", "de Vries", "Bakker", "Andersen", "Nielsen", "Hansen", "Silva", "Santos", "Costa",
    "Yilmaz", "Kaya", "Tanaka", "Suzuki", "Kim", "Lee", "Chen", "Wang", "Singh", "Patel", "Okafor", "Mensah", "Haddad", "Cohen",
];
pub const STREETS: &[&str] = &[
    "Hauptstrasse", "Bahnhofstrasse", "Gartenweg", "Lindenallee", "Schillerstrasse", "Via Roma", "Calle Mayor", "Rue de la Paix",
    "High Street", "Church Road", "Station Road", "Mill Lane", "Kerkstraat", "Dorpsstraat", "Storgatan", "Rynek", "Main Street",
    "Oak Avenue", "Maple Drive", "Park Lane",
];
/// (country, city, currency, UTC offset in hours, phone prefix, postal code digits)
pub const PLACES: &[(&str, &str, &str, i32, &str, usize)] = &[
    ("DE", "Berlin", "EUR", 1, "+49", 5),
    ("DE", "Hamburg", "EUR", 1, "+49", 5),
    ("DE", "Munich", "EUR", 1, "+49", 5),
    ("FR", "Paris", "EUR", 1, "+33", 5),
    ("FR", "Lyon", "EUR", 1, "+33", 5),
    ("IT", "Milan", "EUR", 1, "+39", 5),
    ("ES", "Madrid", "EUR", 1, "+34", 5),
    ("NL", "Amsterdam", "EUR", 1, "+31", 4),
    ("GB", "London", "GBP", 0, "+44", 6),
    ("GB", "Manchester", "GBP", 0, "+44", 6),
    ("PL", "Warsaw", "PLN", 1, "+48", 5),
    ("SE", "Stockholm", "SEK", 1, "+46", 5),
    ("US", "New York", "USD", -5, "+1", 5),
    ("US", "Chicago", "USD", -6, "+1", 5),
    ("US", "San Francisco", "USD", -8, "+1", 5),
];
pub const CATEGORIES: &[&str] = &[
    "electronics", "home", "garden", "toys", "books", "fashion", "beauty", "sports", "grocery", "automotive", "pets", "office",
];
pub const ADJECTIVES: &[&str] = &[
    "Classic", "Smart", "Eco", "Pro", "Mini", "Ultra", "Compact", "Deluxe", "Essential", "Premium", "Organic", "Wireless",
];
pub const NOUNS: &[&str] = &[
    "Lamp", "Kettle", "Backpack", "Headphones", "Blender", "Notebook", "Sneakers", "Jacket", "Shampoo", "Drone", "Chair",
    "Tent", "Puzzle", "Watch", "Speaker", "Mug", "Desk", "Bike Light", "Yoga Mat", "Toolset",
];
pub const PARTNER_SUFFIXES: &[&str] = &["GmbH", "SARL", "Ltd", "BV", "SpA", "AB", "Inc", "Co", "Store", "Trading"];
pub const EMAIL_DOMAINS: &[&str] = &["example.com", "mail.example.org", "post.example.net", "inbox.example.de"];
pub const CHANNELS: &[&str] = &["web", "app", "marketplace", "store"];
pub const STATUSES: &[&str] = &["placed", "paid", "shipped", "delivered", "cancelled", "returned"];
pub const UNKNOWN_CURRENCIES: &[&str] = &["XXX", "ZZZ", "EURO", "usd$"];
