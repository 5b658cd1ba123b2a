from server import ChatServer
from server.testing import open_chat_client


async def test_default_pipeline_completes(server: ChatServer) -> None:
    async with open_chat_client(server, user_id="u1") as client:
        run = await client.run("How can we cut our GPT-4o bill of $5,000 per month?")
    assert run.status == "completed"
    # Model and monthly spend: enough data for the full pipeline.
    assert run.agents() == ["supervisor", "triage", "data", "optimization", "actions", "reporting"]
