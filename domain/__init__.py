"""eventcrm domain: pure model of customers, interactions and money."""
