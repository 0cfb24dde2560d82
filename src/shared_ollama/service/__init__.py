"""The request pipeline and everything it coordinates. No web framework imports here."""
