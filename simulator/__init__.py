"""A faithful local stand-in for Atlassian's Confluence Cloud, auth server and gateway."""
