"""Operations tooling that reads across contexts: the consistency audit."""
