"""Who connects: shipped client profiles (a dated trust store and how the client builds paths) and the admin's own."""
