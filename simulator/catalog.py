"""Fixed vocabularies of the simulated company: its actions, product categories, names and devices."""

from __future__ import annotations

ACTIONS = ("no_action", "discount_10", "free_shipping", "cart_reminder", "loyalty_offer")
"""The next-best-action catalogue: what the CRM can do for a person."""

OFFER_VALUE_CENTS = {
    "no_action": 0,
    "discount_10": 1000,
    "free_shipping": 495,
    "cart_reminder": 0,
    "loyalty_offer": 500,
}
"""The nominal value of each offer as the CRM records it (``activities.offer_value``)."""

CHANNELS = ("email", "sms", "push")
"""Channels the CRM asks consent for and sends through."""
MESSAGE_COST_EUR = {"email": 0.01, "sms": 0.06, "push": 0.005}
"""What one message through each channel costs the company (EUR)."""
CONSENT_CHANNELS = (*CHANNELS, "profiling")
"""What the CRM records a consent for: the message channels, and profiling (an objection to personalised
decisions is a revoked ``profiling`` consent)."""
PROFILING_OBJECTION_SHARE = 0.03
"""Share of new contacts who object to profiling when they sign up."""

CATEGORIES = ("apparel", "shoes", "beauty", "home", "electronics", "sports", "toys", "grocery")
CATEGORY_PRICE_EUR = (35.0, 70.0, 18.0, 30.0, 120.0, 45.0, 25.0, 8.0)
PRODUCTS_PER_CATEGORY = 50
SHIPPING_CENTS = 495
FREE_SHIPPING_OVER_CENTS = 5000

COUNTRIES = ("GB", "DE", "FR", "NL", "US")
COUNTRY_WEIGHTS = (0.35, 0.25, 0.15, 0.10, 0.15)
COUNTRY_LOCALE = ("en-GB", "de-DE", "fr-FR", "nl-NL", "en-US")
COUNTRY_DIAL = ("44", "49", "33", "31", "1")
LANGUAGES = ("en", "de", "fr", "nl", "en")

FIRST_NAMES = (
    "olivia",
    "liam",
    "emma",
    "noah",
    "amelia",
    "oliver",
    "ava",
    "elijah",
    "sophia",
    "lucas",
    "mia",
    "levi",
    "isabella",
    "mateo",
    "luna",
    "ezra",
    "harper",
    "leo",
    "evelyn",
    "asher",
    "ella",
    "james",
    "aurora",
    "ethan",
    "hannah",
    "jonas",
    "lea",
    "paul",
    "marie",
    "louis",
    "chloe",
    "hugo",
    "ines",
    "jules",
    "sara",
    "daan",
    "julia",
    "sem",
    "tess",
    "finn",
    "anna",
    "ben",
    "lena",
    "felix",
    "clara",
    "max",
    "emil",
    "ida",
    "oscar",
    "nora",
    "adam",
    "alice",
    "arthur",
    "rose",
    "gabriel",
    "lina",
    "raphael",
    "jade",
    "theo",
    "zoe",
)
LAST_NAMES = (
    "smith",
    "jones",
    "taylor",
    "brown",
    "williams",
    "wilson",
    "johnson",
    "davies",
    "patel",
    "wright",
    "mueller",
    "schmidt",
    "schneider",
    "fischer",
    "weber",
    "meyer",
    "wagner",
    "becker",
    "schulz",
    "hoffmann",
    "martin",
    "bernard",
    "dubois",
    "thomas",
    "robert",
    "richard",
    "petit",
    "durand",
    "leroy",
    "moreau",
    "de jong",
    "jansen",
    "de vries",
    "van dijk",
    "bakker",
    "janssen",
    "visser",
    "smit",
    "meijer",
    "de boer",
    "garcia",
    "miller",
    "davis",
    "rodriguez",
    "martinez",
    "hernandez",
    "lopez",
    "gonzalez",
    "anderson",
    "lee",
)
EMAIL_DOMAINS = (
    "gmail.com",
    "outlook.com",
    "yahoo.com",
    "icloud.com",
    "gmx.de",
    "orange.fr",
    "ziggo.nl",
    "proton.me",
)
PLACEHOLDER_EMAILS = ("test@example.com", "noemail@shop.invalid")
"""Values that staff type when a customer gives no address: they must never glue people together."""

WEB_USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 "
    "Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 "
    "Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Mobile/15E148",
    "Mozilla/5.0 (Linux; Android 15; Pixel 9) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Mobile "
    "Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPad; CPU OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
)
APP_DEVICES = (
    ("Apple", "iPhone16,1", "ios", "iOS", "18.1"),
    ("Google", "Pixel 9", "android", "Android", "15"),
    ("Samsung", "SM-S921B", "android", "Android", "14"),
    ("Apple", "iPad14,3", "ios", "iPadOS", "18.1"),
)
WEB_PAGES = ("/", "/search", "/category", "/product", "/cart", "/account", "/help", "/offers")
WEB_PAGE_NAMES = ("Home", "Search", "Category", "Product", "Cart", "Account", "Help", "Offers")
WEB_EVENT_PATHS = {
    "identify": "/account",
    "alias": "/account",
    "Product Viewed": "/product",
    "Product Added": "/product",
    "Checkout Started": "/checkout",
    "Order Completed": "/checkout",
    "Email Link Clicked": "/offers",
}
"""The page a web event other than a page view happens on."""
APP_SCREENS = ("Home", "Search", "Category", "Product", "Cart", "Account", "Offers")

WEB_SOURCE = "web"
APP_SOURCE = "app"
SERVER_SOURCE = "server"
CLICK_SOURCES = (WEB_SOURCE, APP_SOURCE, SERVER_SOURCE)
