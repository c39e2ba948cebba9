"""Singer tap for Atlassian Confluence Cloud."""
